"""The git-ignored local cache that prepared models, package data and profiles live in."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """`$SCALEOT_CACHE_DIR`, else `$XDG_CACHE_HOME/scaleot`, else `~/.cache/scaleot`."""
    explicit = os.environ.get("SCALEOT_CACHE_DIR")
    xdg = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    root = Path(explicit) if explicit else xdg / "scaleot"
    root.mkdir(parents=True, exist_ok=True)
    return root
