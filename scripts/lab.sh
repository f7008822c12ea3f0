#!/usr/bin/env bash
# Set up (venv, dependencies) and open the notebooks in JupyterLab on 127.0.0.1.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/_setup.sh
root_flag=(); [ "$(id -u)" = 0 ] && root_flag=(--allow-root)
exec .venv/bin/python -m jupyter lab --ip=127.0.0.1 --ServerApp.root_dir=notebooks "${root_flag[@]}" "$@"
