"""File edges shared by every stage: user-facing input errors, atomic writes, JSON/JSONL records.

This lives in `reward/` because it is the bottom layer (data_prep and align import reward, never the
reverse). Nothing here knows about models.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator


class InputError(Exception):
    """Bad input a user can fix. The CLI prints it as one paragraph and exits non-zero.

    Always say which file, which record, and what to do about it.
    """

    def __init__(self, problem: str, *, file: str | os.PathLike | None = None, record: Any = None,
                 fix: str | None = None):
        self.problem, self.file, self.record, self.fix = problem, file, record, fix
        super().__init__(self.message())

    def message(self) -> str:
        where = ""
        if self.file is not None:
            where = f"{self.file}"
            if self.record is not None:
                where += f", {self.record}"
            where += ": "
        elif self.record is not None:
            where = f"{self.record}: "
        text = where + self.problem.rstrip(".") + "."
        if self.fix:
            text += " " + self.fix.rstrip(".") + "."
        return text


# ---------------------------------------------------------------- atomic writes
@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it into place only if the block succeeds.

    A crash (or kill -9) therefore never leaves a half-written file under the final name.
    Works for files and for directories (the block creates whatever it wants at the temp path).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    target = tmp / path.name
    try:
        yield target
        if not target.exists():
            raise RuntimeError(f"nothing was written to {target} for {path}")
        if path.is_dir() and not path.is_symlink():
            # os.replace cannot replace a non-empty directory: move the old one aside first.
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(target, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(target, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> Path:
    return write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n")


def write_jsonl(path: str | os.PathLike, records: Iterable[dict]) -> int:
    """Write one JSON object a line (atomically); returns the number of records."""
    n = 0
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
            n += 1
    return n


# ---------------------------------------------------------------- reading
def read_json(path: str | os.PathLike, what: str = "JSON file") -> Any:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} not found", file=path, fix="check the path")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise InputError(f"malformed JSON at line {e.lineno}, column {e.colno}: {e.msg}", file=path,
                         fix=f"repair the {what} (is it truncated?)") from None
    except UnicodeDecodeError:
        raise InputError("not UTF-8 text", file=path, fix=f"pass a {what}") from None


def iter_records(path: str | os.PathLike, what: str = "records file") -> Iterator[tuple[int, dict]]:
    """Yield (line_or_index, record) from a JSONL file or a JSON list of objects.

    The first non-blank character decides: '[' means one JSON list, anything else JSONL.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} not found", file=path, fix="check the path")
    with open(path, encoding="utf-8") as f:
        head = f.read(4096).lstrip()
    if not head:
        raise InputError(f"the {what} is empty", file=path, fix="pass a file with at least one record")
    if head.startswith("["):
        data = read_json(path, what)
        for i, rec in enumerate(data):
            if not isinstance(rec, dict):
                raise InputError(f"item is {type(rec).__name__}, expected a JSON object", file=path,
                                 record=f"item {i}", fix=f"make every item of the {what} an object")
            yield i, rec
        return
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f"malformed JSON ({e.msg})", file=path, record=f"line {lineno}",
                                 fix="write one JSON object a line (JSONL) or one JSON list") from None
            if not isinstance(rec, dict):
                raise InputError(f"line is {type(rec).__name__}, expected a JSON object", file=path,
                                 record=f"line {lineno}", fix="write one JSON object a line")
            yield lineno, rec


def read_records(path: str | os.PathLike, what: str = "records file") -> list[dict]:
    return [rec for _, rec in iter_records(path, what)]


def require(rec: dict, key: str, *, file, record, types: type | tuple = object) -> Any:
    """Fetch rec[key] or raise an InputError that names the file, the record and the missing field."""
    if key not in rec:
        raise InputError(f"missing field {key!r}", file=file, record=record,
                         fix=f"every record needs {key!r}")
    value = rec[key]
    if not isinstance(value, types):
        names = types.__name__ if isinstance(types, type) else " or ".join(t.__name__ for t in types)
        raise InputError(f"field {key!r} is {type(value).__name__}, expected {names}", file=file,
                         record=record)
    return value
