"""Where a benchmark's result goes: `<stem>.json` (the data) and `<stem>.md` (the table) in one folder,
and its progress lines (time-stamped, on stdout, for a run followed with `tail -f`)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any


def write_result(out_dir: Path, stem: str, result: dict[str, Any], markdown: str) -> Path:
    """Write both files (the folder is created); returns `out_dir / stem`. The stem is used as it is
    (no `with_suffix`, which would cut a model name such as `qwen2.5` at its dot)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{stem}.json").write_text(json.dumps(result, indent=2))
    (out_dir / f"{stem}.md").write_text(markdown)
    return out_dir / stem


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)
