"""Small file helpers shared by ``curator`` and ``distill`` (standard library only, so
that importing them pulls in neither the warehouse nor torch).

- :func:`sha256_file`: the SHA-256 of a file's bytes, read in 1 MiB blocks.
- :func:`read_jsonl_durable` / :func:`append_jsonl_durable`: append-only JSONL files
  written record batch by record batch and fsync'd. A writer killed mid-write leaves at
  most a torn last line (no newline); readers ignore it, and may cut it off so that the
  next append starts on a clean line.
- :func:`try_lock`: open a file and try to flock it without waiting (is its owner alive?).
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Iterator

BLOCK = 1 << 20


def sha256_file(path: str | Path, h=None) -> str:
    """Hex SHA-256 of the file at ``path``. With ``h`` (a running ``hashlib.sha256()``),
    the file's bytes are added to it instead and its digest so far is returned."""
    h = hashlib.sha256() if h is None else h
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(BLOCK), b""):
            h.update(block)
    return h.hexdigest()


def read_jsonl_durable(path: str | Path, *, loads: Callable[[bytes], Any] = json.loads,
                       stop_at_bad: bool = True, truncate: bool = False) -> list:
    """The records of an append-only JSONL file, in order, up to the first line without a
    newline (a torn write). ``stop_at_bad``: a line that does not decode also ends the
    records (otherwise its error is raised). ``truncate``: cut the file after the last
    record returned, so that what follows it is gone before the next append. A missing
    file has no records."""
    path = Path(path)
    if not path.exists():
        return []
    data = path.read_bytes()
    out, good = [], 0
    for line in io.BytesIO(data):   # lines end at b"\n" only
        if not line.endswith(b"\n"):
            break
        try:
            rec = loads(line)
        except ValueError:
            if stop_at_bad:
                break
            raise
        out.append(rec)
        good += len(line)
    if truncate and good < len(data):
        with open(path, "r+b") as f:
            f.truncate(good)
    return out


def truncate_torn_tail(path: str | Path) -> None:
    """Cut a last line without a newline off the file at ``path`` (if any)."""
    path = Path(path)
    if not path.exists():
        return
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        with open(path, "r+b") as f:
            f.truncate(end)


def append_jsonl_durable(path: str | Path, records: Iterable[Any], *,
                         ensure_ascii: bool = True, clean_tail: bool = False) -> None:
    """Append ``records`` one JSON line each, flush and fsync: what is on disk survives an
    interruption. ``clean_tail``: first cut a torn last line left by an earlier writer."""
    if clean_tail:
        truncate_torn_tail(path)
    text = "".join(json.dumps(r, ensure_ascii=ensure_ascii) + "\n" for r in records)
    if not text:
        return
    with open(path, "a", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


@contextmanager
def try_lock(path: str | Path, *, shared: bool = False) -> Iterator[tuple[IO[bytes] | None, bool]]:
    """Open ``path`` for reading and try to ``flock`` it (shared or exclusive) without
    waiting. Yields ``(file, True)`` when the lock is taken (held until the block ends),
    ``(file, False)`` when another process holds it, and ``(None, False)`` when the file is
    gone. Used on files a live process keeps locked, to tell whether that process is alive."""
    try:
        fh = open(path, "rb")
    except FileNotFoundError:
        yield None, False
        return
    with fh:
        try:
            fcntl.flock(fh.fileno(), (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            yield fh, False
        else:
            yield fh, True
