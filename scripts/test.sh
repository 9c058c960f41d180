#!/usr/bin/env bash
# Set-up command 2: install the project with its test extra into .venv and run the default tests.
# Slow reproduction runs are marked `slow` and excluded here (run them with `-m slow`).
EXTRAS="[test]" source "$(dirname "$0")/_venv.sh"
exec .venv/bin/python -m pytest -m "not slow" --timeout=900 -q "$@"
