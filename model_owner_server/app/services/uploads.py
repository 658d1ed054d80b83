"""What a parsed multipart upload is, as the services see it (the api layer's parser fills it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class UploadedFile:
    field: str
    filename: str  # as sent by the client, reduced to its last path component
    path: Path
    size: int = 0


@dataclass
class MultipartForm:
    fields: dict[str, str] = field(default_factory=dict)
    files: list[UploadedFile] = field(default_factory=list)
