"""Streamed multipart/form-data parsing with a size cap: file parts go straight to disk.

The body is read chunk by chunk from the socket; once more than `max_bytes` arrived (or the
declared Content-Length is already larger) the request is refused with 413 and nothing more is
read. Text fields are capped separately (small); file names are reduced to their last component.
A route may hand a file part to a sink of its own (`sink_for`), which sees the bytes as they arrive
(to check and count JSONL rows without holding the file in memory) and may refuse by raising.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Protocol

from fastapi import HTTPException, Request, status
from python_multipart.multipart import MultipartParseError, MultipartParser, parse_options_header

from model_owner_server.app.services.uploads import MultipartForm, UploadedFile

MAX_FIELD_BYTES = 64 * 1024
MAX_PARTS = 32


class PartSink(Protocol):
    """Takes a file part's bytes in place of the plain file writer; `finish` runs at the part's end."""

    def write(self, chunk: bytes) -> None: ...

    def finish(self) -> object: ...


# (the file part, its open file, the text fields received before it) -> a sink, or None to store it as sent
SinkFactory = Callable[[UploadedFile, IO[bytes], Mapping[str, str]], PartSink | None]


def too_large(limit: int) -> HTTPException:
    return HTTPException(status.HTTP_413_CONTENT_TOO_LARGE,
                         f"request body exceeds the upload cap of {limit} bytes (SCALEOT_MAX_UPLOAD_BYTES)")


class _Collector:
    def __init__(self, dest: Path, sink_for: SinkFactory | None = None) -> None:
        self.dest = dest
        self.sink_for = sink_for
        self._sink: PartSink | None = None
        self.form = MultipartForm()
        self.headers: dict[bytes, bytes] = {}
        self._name = b""
        self._value = b""
        self._field = ""
        self._text: bytearray | None = None
        self._file: UploadedFile | None = None
        self._handle: IO[bytes] | None = None
        self.error: str | None = None

    def on_part_begin(self) -> None:
        self.headers = {}

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def on_header_end(self) -> None:
        self.headers[self._name.lower()] = self._value
        self._name, self._value = b"", b""

    def on_headers_finished(self) -> None:
        if len(self.form.files) + len(self.form.fields) >= MAX_PARTS:
            self.error = f"too many form parts (at most {MAX_PARTS})"
            return
        _, options = parse_options_header(self.headers.get(b"content-disposition", b""))
        self._field = options.get(b"name", b"").decode("utf-8", "replace")
        filename = options.get(b"filename")
        if filename is None:
            self._text, self._file = bytearray(), None
            return
        name = Path(filename.decode("utf-8", "replace").replace("\\", "/")).name
        path = self.dest / f"part{len(self.form.files):03d}"
        self._file = UploadedFile(self._field, name, path)
        self._handle = path.open("wb")
        self._sink = self.sink_for(self._file, self._handle, dict(self.form.fields)) if self.sink_for else None
        self._text = None

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if self._handle is not None and self._file is not None:
            self._file.size += len(chunk)
            if self._sink is not None:
                self._sink.write(chunk)  # may raise: the request is refused mid-body
            else:
                self._handle.write(chunk)
        elif self._text is not None:
            self._text += chunk
            if len(self._text) > MAX_FIELD_BYTES:
                self.error = f"form field {self._field!r} is longer than {MAX_FIELD_BYTES} bytes"

    def on_part_end(self) -> None:
        if self._handle is not None and self._file is not None:
            if self._sink is not None:
                self._sink.finish()
            self._handle.close()
            self.form.files.append(self._file)
        elif self._text is not None:
            self.form.fields[self._field] = self._text.decode("utf-8", "replace")
        self._handle, self._file, self._text, self._sink = None, None, None, None

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()


async def parse_multipart(request: Request, dest: Path, max_bytes: int,
                          sink_for: SinkFactory | None = None) -> MultipartForm:
    """Parse the request body into `dest` (which the caller creates and removes); a sink's exception
    propagates unchanged (the caller maps it to its answer)."""
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data" or b"boundary" not in params:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "expected a multipart/form-data body with a boundary")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise too_large(max_bytes)
    collector = _Collector(dest, sink_for)
    callbacks = {name: getattr(collector, name) for name in (
        "on_part_begin", "on_header_field", "on_header_value", "on_header_end", "on_headers_finished",
        "on_part_data", "on_part_end")}
    parser = MultipartParser(params[b"boundary"], callbacks)  # type: ignore[arg-type]
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > max_bytes:
                raise too_large(max_bytes)
            parser.write(chunk)
            if collector.error:
                raise HTTPException(status.HTTP_400_BAD_REQUEST, collector.error)
        parser.finalize()
    except MultipartParseError as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, f"malformed multipart body: {exc}") from exc
    finally:
        collector.close()
    return collector.form
