"""Checking and neutralising a multipart/form-data request body before BentoML parses it.

The service's request guard passes an upload body, as it arrives, through
:class:`FormStream` (:func:`sanitize_form` for a whole body), which walks the multipart
structure (RFC 7578: parts between ``--boundary`` delimiters, each with its own header block)
and:

- refuses what is not ``multipart/form-data`` with a boundary, a body with no file in the
  expected field (``expected a file in field 'image'``), unknown fields, more parts than
  ``max_parts`` and a file part over the per-file limit (413, as soon as its bytes exceed
  it, before the rest of the body is read), each with one clear line
  (:class:`~mammo_pipeline.serving.image_io.InputError`);
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


class FormStream:
    """The incremental form of :func:`sanitize_form`: :meth:`feed` takes the body as it
    arrives and returns the sanitized bytes that are final so far; :meth:`finish` checks the
    end. Every check fires as soon as the bytes that break it have arrived: a file part over
    ``max_file_bytes`` (413 naming the limit) after at most that many bytes of it, a part
    count over ``max_parts``, a bad field name at its header. Held back between calls: at
    most one header block or a boundary's length of part data."""

    #: Largest text field value (pixel_spacing_mm, top_k, ...).
    MAX_TEXT_BYTES = 1024
    #: Largest preamble before the first boundary.
    MAX_PREAMBLE_BYTES = 64 * 1024

    def __init__(self, content_type: str, spec: FormSpec, max_file_bytes: int) -> None:
        self.spec = spec
        self.max_file_bytes = max_file_bytes
        self.boundary = boundary_of(content_type, spec)
        self.delim = b"--" + self.boundary
        self._marker = b"\r\n" + self.delim
        self._buf = bytearray()
        self._state = "preamble"  # -> delim -> headers -> data -> ... -> end
        self._seen = 0
        self.files = 0
        self.parts = 0
        self._part_limit = 0
        self._part_size = 0
        self._part_what = ""
        self._part_setting = ""

    def feed(self, chunk: bytes) -> list[bytes]:
        """Sanitized bytes ready to pass on (possibly none); :class:`InputError` on a fault."""
        self._buf += chunk
        out: list[bytes] = []
        while self._step(out):
            pass
        return out

    def finish(self) -> None:
        """The body ended: it must have closed its last part and held a file."""
        if self._state != "end":
            if self._state == "preamble":
                raise InputError(f"malformed multipart body: no part found; {self.spec.expected()}")
            raise InputError("malformed multipart body: truncated (no closing boundary)")
        if self.files == 0:
            raise InputError(f"{self.spec.expected()}; the body has no file in it")

    def _step(self, out: list[bytes]) -> bool:
        buf = self._buf
        if self._state == "preamble":
            pos = buf.find(self.delim)
            if pos < 0:
                if len(buf) > self.MAX_PREAMBLE_BYTES:
                    raise InputError(
                        f"malformed multipart body: no part found; {self.spec.expected()}"
                    )
                return False
            del buf[:pos]
            self._state = "delim"
            return True
        if self._state == "delim":  # buf starts with the delimiter
            after = len(self.delim)
            if len(buf) < after + 2:
                return False
            if buf[after : after + 2] == b"--":
                out.append(self.delim + b"--\r\n")
                buf.clear()
                self._state = "end"
                return False
            self._state = "headers"
            return True
        if self._state == "headers":
            line_end = buf.find(b"\r\n", len(self.delim))
            header_end = buf.find(b"\r\n\r\n", max(line_end, 0)) if line_end >= 0 else -1
            if header_end < 0 or header_end - line_end > MAX_PART_HEADER_BYTES:
                if len(buf) > MAX_PART_HEADER_BYTES + len(self.delim) + 64 or header_end >= 0:
                    raise InputError(
                        "malformed multipart body: a part has no (or too long) headers"
                    )
                return False
            out.append(self._part_header(bytes(buf[line_end + 2 : header_end])))
            del buf[: header_end + 4]
            self._state = "data"
            return True
        if self._state == "data":
            nxt = buf.find(self._marker)
            if nxt < 0:
                keep = len(self._marker) - 1
                if len(buf) > keep:
                    self._emit(out, len(buf) - keep)
                return False
            self._emit(out, nxt)
            out.append(b"\r\n")
            del buf[:2]  # now at the delimiter
            self._state = "delim"
            return True
        if self._state == "end":
            buf.clear()  # the epilogue is dropped
        return False

    def _emit(self, out: list[bytes], n: int) -> None:
        self._part_size += n
        if self._part_size > self._part_limit:
            raise InputError(
                f"{self._part_what} is over the limit of {self._part_limit} bytes"
                f"{self._part_setting}",
                status=413,
            )
        out.append(bytes(self._buf[:n]))
        del self._buf[:n]

    def _part_header(self, block: bytes) -> bytes:
        spec = self.spec
        self.parts += 1
        if self.parts > spec.max_parts:
            raise InputError(
                f"too many parts in the multipart body: more than {spec.max_parts}", status=413
            )
        headers = _parse_headers(block)
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
            self.files += 1
            if self.files > 1 and not spec.many:
                raise InputError(f"send one file in field '{spec.file_field}', not several")
            safe = "upload.dcm" if _is_dicom_hint(fm.group(1), part_type) else "upload"
            new = f'Content-Disposition: form-data; name="{name}"; filename="{safe}"'
            self._part_limit = self.max_file_bytes
            self._part_what = f"the file in field '{name}' (part {self.parts})"
            self._part_setting = " (MAMMO_MAX_UPLOAD_BYTES)"
        elif name in spec.text_fields:
            if fm is not None:
                raise InputError(f"field '{name}' must be a text value, not a file")
            new = f'Content-Disposition: form-data; name="{name}"'
            self._part_limit = self.MAX_TEXT_BYTES
            self._part_what = f"text field '{name}'"
            self._part_setting = ""
        else:
            raise InputError(f"{spec.expected()}; got an unexpected field {_shown(name)}")
        self._part_size = 0
        block_out = new + "".join(
            f"\r\n{k.title()}: {v}" for k, v in headers.items() if k in _KEEP_HEADERS
        )
        return self.delim + b"\r\n" + block_out.encode("latin-1") + b"\r\n\r\n"


def sanitize_form(
    body: bytes | bytearray, content_type: str, spec: FormSpec, max_file_bytes: int = 1 << 62
) -> bytes:
    """The same multipart body with safe file names, after checking fields and part count
    (:class:`FormStream` on a whole body)."""
    stream = FormStream(content_type, spec, max_file_bytes)
    out = stream.feed(bytes(body))
    stream.finish()
    return b"".join(out)
