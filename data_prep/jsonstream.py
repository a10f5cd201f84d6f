"""Stream the top level of a big JSON object (a COCO annotation file) without loading it whole.

COCO's instances_train2017.json is ~450 MB; `json.load` turns it into ~860k dicts plus their polygons
(several GB) before a single record can be checked or thinned. This reader walks the top-level object
key by key and yields the items of each list one at a time, decoded by the stdlib's C scanner
(`JSONDecoder.raw_decode`), so the caller keeps only the fields it needs.

Only the top level is streamed: each list item (an image, an annotation with its polygons) is decoded
whole, which is what every COCO consumer wants.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator

from reward.files import InputError

_WS = " \t\n\r"
_CHUNK = 1 << 22  # 4 MiB of text per read


class JSONStreamError(ValueError):
    """Malformed JSON at an absolute character offset (the caller turns it into an InputError)."""

    def __init__(self, msg: str, offset: int, where: str | None = None):
        self.msg, self.offset, self.where = msg, offset, where
        super().__init__(f"{msg} at character {offset}" + (f" ({where})" if where else ""))


class _Reader:
    def __init__(self, f):
        self.f = f
        self.buf = ""
        self.pos = 0
        self.base = 0  # absolute offset of buf[0]
        self.eof = False
        self.decoder = json.JSONDecoder()

    def _more(self, at_least: int = _CHUNK) -> bool:
        if self.eof:
            return False
        chunk = self.f.read(max(_CHUNK, at_least))
        if not chunk:
            self.eof = True
            return False
        # drop what was consumed, then append
        self.base += self.pos
        self.buf = self.buf[self.pos:] + chunk
        self.pos = 0
        return True

    def peek(self) -> str:
        """Next non-whitespace character ('' at end of file)."""
        while True:
            buf, n = self.buf, len(self.buf)
            p = self.pos
            while p < n and buf[p] in _WS:
                p += 1
            self.pos = p
            if p < n:
                return buf[p]
            if not self._more():
                return ""

    def expect(self, chars: str, where: str | None = None) -> str:
        c = self.peek()
        if not c or c not in chars:
            found = repr(c) if c else "end of file"
            want = " or ".join(repr(x) for x in chars)
            raise JSONStreamError(f"expected {want}, found {found}", self.offset, where)
        self.pos += 1
        return c

    @property
    def offset(self) -> int:
        return self.base + self.pos

    def value(self, where: str | None = None) -> Any:
        """Decode one complete JSON value starting at the next non-blank character."""
        if not self.peek():
            raise JSONStreamError("unexpected end of file", self.offset, where)
        while True:
            try:
                obj, end = self.decoder.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError as e:
                # Possibly just cut by the chunk boundary: read more (at least doubling) and retry.
                if self._more(len(self.buf)):
                    continue
                raise JSONStreamError(e.msg, self.base + e.pos, where) from None
            # A number or literal that ends exactly at the buffer end may continue in the next chunk.
            if end == len(self.buf) and not self.eof and self._more(len(self.buf)):
                continue
            self.pos = end
            return obj


def iter_top_level(path: str | os.PathLike, stream_lists: bool = True) -> Iterator[tuple[str, Any]]:
    """Yield (key, value) for the top-level object of a JSON file.

    For a key whose value is a list and `stream_lists` is True, yields (key, _ListItems) whose items are
    decoded lazily: iterate it (it must be consumed or skipped before the next key).
    """
    with open(path, encoding="utf-8") as f:
        r = _Reader(f)
        r.expect("{", "the file must hold one JSON object")
        if r.peek() == "}":
            r.pos += 1
            return
        while True:
            key = r.value("object key")
            if not isinstance(key, str):
                raise JSONStreamError("object key is not a string", r.offset)
            r.expect(":", f"after key {key!r}")
            if stream_lists and r.peek() == "[":
                items = _ListItems(r, key)
                yield key, items
                items.drain()
            else:
                yield key, r.value(f"value of {key!r}")
            if r.expect(",}", f"after the value of {key!r}") == "}":
                break
        if r.peek():
            raise JSONStreamError("extra data after the top-level object", r.offset)


class _ListItems:
    """Lazy items of one top-level list; `index` is the position of the last item yielded."""

    def __init__(self, reader: _Reader, key: str):
        self.r, self.key, self.index, self.done = reader, key, -1, False
        reader.expect("[")

    def __iter__(self) -> Iterator[Any]:
        r = self.r
        if self.done:
            return
        if r.peek() == "]":
            r.pos += 1
            self.done = True
            return
        while True:
            self.index += 1
            yield r.value(f"{self.key}[{self.index}]")
            if r.expect(",]", f"after {self.key}[{self.index}]") == "]":
                self.done = True
                return

    def drain(self) -> None:
        for _ in self:
            pass


def stream_error(path: Path, e: JSONStreamError, what: str) -> InputError:
    """Turn a JSONStreamError into the user-facing error (line and column computed only now)."""
    line, col = _line_col(path, e.offset)
    record = e.where or f"line {line}"
    return InputError(f"malformed JSON at line {line}, column {col}: {e.msg}", file=path, record=record,
                      fix=f"repair the {what} (is it truncated?)")


def _line_col(path: Path, offset: int) -> tuple[int, int]:
    line, seen = 1, 0
    last_nl = -1
    with open(path, encoding="utf-8", errors="replace") as f:
        while seen < offset:
            chunk = f.read(min(_CHUNK, offset - seen))
            if not chunk:
                break
            n = chunk.count("\n")
            if n:
                line += n
                last_nl = seen + chunk.rfind("\n")
            seen += len(chunk)
    return line, offset - last_nl
