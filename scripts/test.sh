#!/usr/bin/env bash
# Set-up command 2: install the project with its test extra into .venv and run the default tests.
# Slow reproduction runs are marked `slow` and excluded here (run them with `-m slow`).
EXTRAS="[test,dask]" source "$(dirname "$0")/_venv.sh"
# -n 2 --dist loadfile: both cores, a test file's tests (and its module fixtures) on one worker
exec .venv/bin/python -m pytest -m "not slow" -n 2 --dist loadfile --timeout=900 -q "$@"
