#!/usr/bin/env bash
# The main job, end to end, on the embedded default (SQLite + local files + the real SmolLM2-135M):
# install, start the model owner's server (API + one worker), then run the data owner's workflow on a
# built-in task: ask for the (alpha, beta) the model owner recommends for a privacy gap (served from the
# frontier it measured) and request that ScaleOT emulator, download + verify it, tune the adapter locally
# at the learning rate the recommendation names, upload only the adapter, evaluate (the Offsite-Tuning
# matrix) and generate with the plugged model.
# Usage: bash scripts/demo.sh        (env: DEMO_DIR, DEMO_TASK, DEMO_TRAIN, DEMO_TEST, DEMO_PRIVACY_GAP, PORT)
#        bash scripts/demo.sh > log  (no terminal: everything goes to the log, progress as plain lines:
#                                     step, percent, elapsed, estimate, every SCALEOT_PROGRESS_INTERVAL s)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -t 1 ]; then
  exec 2>&1
  export SCALEOT_PROGRESS=plain
fi
START=$(date +%s)
bash scripts/install.sh server,client,bench
. .venv/bin/activate

DEMO_DIR="${DEMO_DIR:-out/demo}"
TASK="${DEMO_TASK:-goal_step_wikihow_goal}"
PORT="${PORT:-8765}"
URL="http://127.0.0.1:${PORT}"
mkdir -p "$DEMO_DIR"
export SCALEOT_DATA_DIR="$DEMO_DIR/server"
export SCALEOT_MODELS='["smollm2-135m"]'
# the model owner serves its measured frontier; the recommendation is read off it
FRONTIER='{"smollm2-135m": "results/frontier-smollm2-135m-goal_step_wikihow_step.json"}'
export SCALEOT_FRONTIERS="${SCALEOT_FRONTIERS:-$FRONTIER}"
GAP="${DEMO_PRIVACY_GAP:-3}"
export SCALEOT_CONFIG_DIR="$DEMO_DIR/client-config"
export SCALEOT_ADMIN_KEY="${SCALEOT_ADMIN_KEY:-$(python -c 'import secrets; print(secrets.token_urlsafe(32))')}"
step() {
  if [ -t 1 ]; then printf '\n\033[1m== %s (%ss)\033[0m\n' "$1" "$(( $(date +%s) - START ))"
  else printf '\n== %s (%ss)\n' "$1" "$(( $(date +%s) - START ))"; fi
}
field() { python -c "import json, sys; print(json.load(sys.stdin)$1)"; }

step "model owner: start the service on $URL (log: $DEMO_DIR/server.log)"
scaleot-server serve --port "$PORT" >"$DEMO_DIR/server.log" 2>&1 &
SERVER_PID=$!
trap 'kill $SERVER_PID 2>/dev/null; wait $SERVER_PID 2>/dev/null || true' EXIT
python - "$URL" <<'PY'
import sys, time, httpx
for _ in range(240):
    try:
        if httpx.get(sys.argv[1] + "/healthz", timeout=2).status_code == 200:
            sys.exit(0)
    except httpx.HTTPError:
        pass
    time.sleep(0.5)
sys.exit("server did not start; see the server log")
PY
KEY=$(scaleot-server keys create --owner demo-data-owner | tail -n 1 | awk '{print $NF}')
scaleot config set --url "$URL" --api-key "$KEY"

step "data owner: private data (here: the public $TASK task stands in for it)"
scaleot data export "$TASK" --split train --limit "${DEMO_TRAIN:-240}" --out "$DEMO_DIR/train.jsonl"
scaleot data export "$TASK" --split validation --limit 60 --out "$DEMO_DIR/valid.jsonl"

step "data owner: the dial setting the model owner recommends for a privacy gap of $GAP points"
scaleot emulators recommend --model smollm2-135m --privacy-gap "$GAP"
# the learning rate the owner chose on the validation split of this task if it measured it, else the median
LR=$(scaleot emulators recommend --model smollm2-135m --privacy-gap "$GAP" --json | python -c "
import json, statistics, sys
rates = json.load(sys.stdin)['learning_rates']
print(rates.get('$TASK') or (statistics.median(rates.values()) if rates else 1e-4))")

step "data owner: request that emulator (stage 1 runs once per base model, ~12 min on 2 cores)"
EMU=$(scaleot emulators request --model smollm2-135m --privacy-gap "$GAP" --wait --json | field '["id"]')
scaleot emulators status "$EMU"

step "data owner: download and verify the emulator"
scaleot emulators download "$EMU" --out "$DEMO_DIR/emulator"

step "data owner: tune the adapter locally on the emulator"
scaleot train --emulator "$DEMO_DIR/emulator" --data "$DEMO_DIR/train.jsonl" --valid "$DEMO_DIR/valid.jsonl" \
  --out "$DEMO_DIR/adapter" --epochs 1 --lr "$LR"

step "data owner: upload only the adapter weights"
ADA=$(scaleot adapters upload "$DEMO_DIR/adapter" --json | field '["id"]')
echo "adapter $ADA"

step "evaluate: the Offsite-Tuning matrix on the test split"
scaleot evals run "$ADA" --task "$TASK" --limit "${DEMO_TEST:-200}"

step "generate with the full model plugged with the adapter"
scaleot generate "$ADA" --prompt "How do I clean a bowling ball?" --max-new-tokens 40 --chat

step "done in $(( $(date +%s) - START )) s"
