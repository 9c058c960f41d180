#!/usr/bin/env bash
# Set-up command 1: install the project into .venv and run the main job end to end on the
# embedded synthetic log: generate -> preprocess (Beam, DirectRunner) -> train (CCN) ->
# evaluate -> export (TF Serving layout). Extra arguments go to `python -m ccn.main`.
EXTRAS="" source "$(dirname "$0")/_venv.sh"
exec .venv/bin/python -m ccn.main "$@"
