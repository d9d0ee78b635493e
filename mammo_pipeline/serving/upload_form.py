"""Checking and neutralising a multipart/form-data request body before BentoML parses it.

The service's request guard buffers an upload body (never more than its size limit) and
passes it through :func:`sanitize_form`, which walks the multipart structure (RFC 7578: parts
between ``--boundary`` delimiters, each with its own header block) and:

- refuses what is not ``multipart/form-data`` with a boundary, a body with no file in the
  expected field (``expected a file in field 'image'``), unknown fields, and more parts than
  ``max_parts``, each with one clear line (:class:`~mammo_pipeline.serving.image_io.InputError`);
- replaces every client file name by ``upload`` (``upload.dcm`` when the client said the
  file is DICOM, by a ``.dcm`` name or ``application/dicom``): BentoML writes an upload to a
  temporary file whose name ends with the client's file name, so a 250-character or
  path-like name must never reach it.

Only header blocks are read and rewritten; file contents are copied as they are.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mammo_pipeline.serving.image_io import InputError

#: Largest header block of one part.
MAX_PART_HEADER_BYTES = 8 * 1024
#: Part headers kept (everything else, e.g. Content-Transfer-Encoding, is dropped).
_KEEP_HEADERS = ("content-type",)
_NAME = re.compile(r'(?:^|;)\s*name\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;\s]+))', re.IGNORECASE)
_FILENAME = re.compile(r"(?:^|;)\s*filename\*?\s*=\s*(\"(?:[^\"\\]|\\.)*\"|[^;]*)", re.IGNORECASE)
_BOUNDARY = re.compile(r'boundary\s*=\s*(?:"([^"]+)"|([^;\s]+))', re.IGNORECASE)


@dataclass(frozen=True)
class FormSpec:
    """What one route accepts: its file field, whether several files may come in it, and
    the text fields it knows."""

    file_field: str
    many: bool = False
    text_fields: frozenset[str] = frozenset()
    max_parts: int = 8

    def expected(self) -> str:
        what = "one or more files" if self.many else "a file"
        return f"expected {what} in multipart/form-data field '{self.file_field}'"


def _shown(name: str) -> str:
    """A client-supplied name, safe to echo: printable, at most 40 characters."""
    clean = "".join(ch if ch.isprintable() else "?" for ch in name)
    return repr(clean if len(clean) <= 40 else clean[:37] + "...")


def boundary_of(content_type: str, spec: FormSpec) -> bytes:
    """The multipart boundary of a Content-Type header, or a 4xx naming what is expected."""
    media = content_type.split(";", 1)[0].strip().lower()
    if media != "multipart/form-data":
        got = f"a {media} body" if media else "a body without Content-Type"
        raise InputError(f"{spec.expected()}; got {got}", status=415)
    m = _BOUNDARY.search(content_type)
    boundary = (m.group(1) or m.group(2)) if m else ""
    if not boundary or len(boundary) > 200:
        raise InputError(f"malformed multipart body: no valid boundary; {spec.expected()}")
    return boundary.encode("latin-1")


def _parse_headers(block: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in block.decode("latin-1").split("\r\n"):
        if not line.strip():
            continue
        key, sep, value = line.partition(":")
        if not sep:
            raise InputError("malformed multipart body: a part header line has no ':'")
        headers[key.strip().lower()] = value.strip()
    return headers


def _is_dicom_hint(filename: str, content_type: str) -> bool:
    return filename.lower().rstrip('"').endswith((".dcm", ".dicom")) or (
        content_type.split(";", 1)[0].strip().lower() == "application/dicom"
    )


def sanitize_form(body: bytes | bytearray, content_type: str, spec: FormSpec) -> bytes:
    """The same multipart body with safe file names, after checking fields and part count."""
    boundary = boundary_of(content_type, spec)
    delim = b"--" + boundary
    view = memoryview(body)
    out: list[bytes | memoryview] = []
    pos = body.find(delim)
    if pos < 0:
        raise InputError(f"malformed multipart body: no part found; {spec.expected()}")
    files = 0
    parts = 0
    while True:
        after = pos + len(delim)
        if body[after : after + 2] == b"--":  # closing delimiter
            out.append(b"--" + boundary + b"--\r\n")
            break
        line_end = body.find(b"\r\n", after)
        if line_end < 0:
            raise InputError("malformed multipart body: truncated after a boundary")
        header_end = body.find(b"\r\n\r\n", line_end)
        if header_end < 0 or header_end - line_end > MAX_PART_HEADER_BYTES:
            raise InputError("malformed multipart body: a part has no (or too long) headers")
        nxt = body.find(b"\r\n" + delim, header_end + 4)
        if nxt < 0:
            raise InputError("malformed multipart body: truncated (no closing boundary)")
        parts += 1
        if parts > spec.max_parts:
            raise InputError(
                f"too many parts in the multipart body: more than {spec.max_parts}", status=413
            )
        headers = _parse_headers(bytes(body[line_end + 2 : header_end]))
        disposition = headers.get("content-disposition", "")
        m = _NAME.search(disposition)
        if not disposition.lower().startswith("form-data") or m is None:
            raise InputError("malformed multipart body: a part has no form-data name")
        name = m.group(1) if m.group(1) is not None else m.group(2)
        fm = _FILENAME.search(disposition)
        part_type = headers.get("content-type", "")
        if name == spec.file_field:
            if fm is None:
                raise InputError(
                    f"{spec.expected()}; field '{name}' is a text field, not a file upload"
                )
            files += 1
            if files > 1 and not spec.many:
                raise InputError(f"send one file in field '{spec.file_field}', not several")
            safe = "upload.dcm" if _is_dicom_hint(fm.group(1), part_type) else "upload"
            new = f'Content-Disposition: form-data; name="{name}"; filename="{safe}"'
        elif name in spec.text_fields:
            if fm is not None:
                raise InputError(f"field '{name}' must be a text value, not a file")
            new = f'Content-Disposition: form-data; name="{name}"'
        else:
            raise InputError(f"{spec.expected()}; got an unexpected field {_shown(name)}")
        block = new + "".join(
            f"\r\n{k.title()}: {v}" for k, v in headers.items() if k in _KEEP_HEADERS
        )
        out += [delim, b"\r\n", block.encode("latin-1"), b"\r\n\r\n"]
        out.append(view[header_end + 4 : nxt])
        out.append(b"\r\n")
        pos = nxt + 2
    if files == 0:
        raise InputError(f"{spec.expected()}; the body has no file in it")
    return b"".join(out)
