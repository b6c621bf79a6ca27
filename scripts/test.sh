#!/usr/bin/env bash
# The whole test suite, slow end-to-end tests included, after a lint check.
#   bash scripts/test.sh [pytest args]
source "$(dirname "$0")/venv.sh"
python -m ruff check .
python -m pytest "$@"
