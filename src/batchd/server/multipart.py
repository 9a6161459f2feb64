"""Streaming ``multipart/form-data`` for uploads.

Starlette's form parser spools a whole upload to a temporary file before the
handler runs; this one hands each chunk of the ``file`` part to the upload as it
arrives, so size limits apply while streaming and the bytes are written once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from batchd.errors import InvalidRequest

MAX_FIELD_BYTES = 64 * 1024


class Sink(Protocol):
    """Where the bytes of the file part go (a file upload, an Upload's part)."""

    async def write(self, data: bytes) -> None: ...

    def expect_purpose(self, purpose: str) -> None: ...


@dataclass
class _Part:
    name: str = ""
    filename: str | None = None
    data: bytearray = field(default_factory=bytearray)


@dataclass
class UploadForm:
    fields: dict[str, str]
    filename: str | None
    """None when no ``file`` part was sent."""


async def receive_upload(
    request: Request, upload: Sink, *, file_field: str = "file", require_filename: bool = True
) -> UploadForm:
    """Stream the ``file_field`` part into ``upload``; the other fields are returned.
    ``require_filename=False``: the part is the file even without a filename (an Upload's
    ``data``, which clients may send as a plain field)."""
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise InvalidRequest(
            "Uploads must be multipart/form-data with a 'file' part and a 'purpose' field.",
            code="invalid_content_type",
        )
    events: list[tuple[str, Any]] = []
    header_field = bytearray()
    header_value = bytearray()
    headers: dict[bytes, bytes] = {}

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header_field.extend(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header_value.extend(data[start:end])

    def on_header_end() -> None:
        headers[bytes(header_field).lower()] = bytes(header_value)
        header_field.clear()
        header_value.clear()

    def on_headers_finished() -> None:
        events.append(("part", dict(headers)))
        headers.clear()

    def on_part_data(data: bytes, start: int, end: int) -> None:
        events.append(("data", bytes(data[start:end])))

    def on_part_end() -> None:
        events.append(("end", None))

    parser = MultipartParser(
        boundary,
        {
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
    )
    fields: dict[str, str] = {}
    filename: str | None = None
    part: _Part | None = None
    try:
        async for chunk in request.stream():
            parser.write(chunk)
            for kind, value in events:
                if kind == "part":
                    part = _part_from_headers(value)
                    if part.filename is None and part.name == file_field and not require_filename:
                        part.filename = ""
                    if part.filename is not None and part.name == file_field:
                        if filename is not None:
                            raise InvalidRequest(
                                f"Send exactly one {file_field!r} part.",
                                param=file_field,
                                code="invalid_value",
                            )
                        filename = part.filename or "upload"
                elif kind == "data" and part is not None:
                    if part.name == file_field and part.filename is not None:
                        await upload.write(value)
                    else:
                        part.data.extend(value)
                        if len(part.data) > MAX_FIELD_BYTES:
                            raise InvalidRequest(
                                f"Form field {part.name!r} is too large.",
                                param=part.name,
                                code="invalid_value",
                            )
                elif kind == "end" and part is not None:
                    if not (part.name == file_field and part.filename is not None):
                        fields[part.name] = part.data.decode("utf-8", "replace")
                        if part.name == "purpose":
                            upload.expect_purpose(fields["purpose"])
                    part = None
            events.clear()
        parser.finalize()
    except ValueError as exc:  # the multipart parser's complaint about malformed input
        raise InvalidRequest(f"Malformed multipart body: {exc}", code="invalid_multipart") from exc
    return UploadForm(fields=fields, filename=filename)


def _part_from_headers(headers: dict[bytes, bytes]) -> _Part:
    _, params = parse_options_header(headers.get(b"content-disposition", b""))
    name = params.get(b"name", b"").decode("utf-8", "replace")
    raw_filename = params.get(b"filename")
    filename = raw_filename.decode("utf-8", "replace") if raw_filename is not None else None
    if filename is not None:
        # Only the base name matters (and it is never used as a path).
        filename = filename.replace("\\", "/").rsplit("/", 1)[-1][:255]
    return _Part(name=name, filename=filename)
