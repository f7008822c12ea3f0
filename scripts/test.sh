#!/usr/bin/env bash
# Set up (venv, dependencies, Chromium) and run the whole test suite: unit, IPython,
# notebook execution, browser, multi-process. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
JAXMAGIC_NEEDS_CHROMIUM=1 source scripts/_setup.sh
exec .venv/bin/python -m pytest "$@"
