"""`python -m model_owner_server.jobs`: one worker process (what `scaleot-server serve` starts)."""

from __future__ import annotations

import sys

from model_owner_server.jobs.runner import run_worker
from model_owner_server.settings import get_settings

if __name__ == "__main__":
    sys.exit(0 if run_worker(get_settings()) >= 0 else 1)
