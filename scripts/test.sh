#!/usr/bin/env bash
# Set-up command 2: install the project with its test extra into .venv and run the default tests.
# Slow reproduction runs are marked `slow` and excluded here (run them with `-m slow`).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
"$PY" -c 'import sys; assert sys.version_info[:2] == (3, 11), f"Python 3.11 required, found {sys.version}"'
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'
export TF_CPP_MIN_LOG_LEVEL=2
exec .venv/bin/python -m pytest -m "not slow" --timeout=900 -q "$@"
