#!/usr/bin/env bash
# The test command (what .ci/run calls): install, lint, type-check, then every test incl. `real` ones.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
. .venv/bin/activate
ruff check .
mypy
python -m pytest -q --durations=15 "$@"
