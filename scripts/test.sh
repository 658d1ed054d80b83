#!/usr/bin/env bash
# The test command (what .ci/run calls): install, lint, type-check, every test incl. `real` ones on the
# embedded default (SQLite), then the service tests (persistence, queue, multi-worker, restart) again on a
# real PostgreSQL server started on loopback. Arguments go to the first pytest run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
. .venv/bin/activate
ruff check .
mypy
python -m pytest -q --durations=15 "$@"
echo "== API fuzz: schemathesis from the OpenAPI document against a real server on loopback (data-owner + admin key)"
python scripts/fuzz_api.py --max-time 60 --max-examples 30 --out "${TMPDIR:-/tmp}/scaleot-api-fuzz.json"

pgdir=$(mktemp -d "${TMPDIR:-/tmp}/scaleot-pg.XXXXXX")
trap 'bash scripts/postgres.sh stop "$pgdir" >/dev/null 2>&1 || true; rm -rf "$pgdir"' EXIT
if url=$(bash scripts/postgres.sh start "$pgdir" | tail -1) && [ -n "$url" ]; then
  echo "== service tests on PostgreSQL ($(psql --version 2>/dev/null || echo server) on 127.0.0.1)"
  SCALEOT_TEST_POSTGRES_URL="$url" python -m pytest -q --durations=5 tests/service
else
  echo "== SKIPPED: the PostgreSQL pass: no server could be started (reason above); SQLite results only" >&2
fi
