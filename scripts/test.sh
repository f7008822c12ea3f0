#!/usr/bin/env bash
# Set up (venv, dependencies, Chromium) and run the whole test suite: unit, IPython,
# notebook execution, browser, multi-process, after ruff (format + lint). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
JAXMAGIC_NEEDS_CHROMIUM=1 source scripts/_setup.sh
# Formatting and lint first (configured in pyproject.toml): a style slip fails in seconds.
.venv/bin/ruff format --check --quiet jaxmagic tests bench
.venv/bin/ruff check --quiet jaxmagic tests bench
exec .venv/bin/python -m pytest "$@"
