#!/usr/bin/env bash
# Set-up command 1: install the project into .venv and run the main job end to end on the
# embedded synthetic log: generate -> preprocess (Beam, DirectRunner) -> train (CCN) ->
# evaluate -> export (TF Serving layout). Extra arguments go to `python -m ccn.main`.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
"$PY" -c 'import sys; assert sys.version_info[:2] == (3, 11), f"Python 3.11 required, found {sys.version}"'
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e .
export TF_CPP_MIN_LOG_LEVEL=2
exec .venv/bin/python -m ccn.main "$@"
