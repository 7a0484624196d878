"""The generation journal: every response is appended and fsync'd here before it counts
as done, and written to the warehouse in short batches afterwards.

The warehouse cannot be held open for a whole generation (other processes must be able
to read it), so responses reach it in commits every half second or so. The journal
covers the gap: a response is durable on disk from the moment it is received, and a
generation that is killed (SIGKILL, power loss) between a response and the next commit
loses nothing. The next `curator generate` (or `curator batch collect`) replays
journals left by dead processes into the warehouse before it asks for anything, and
storing is idempotent (:func:`curator.teachers.store.write_records`), so replaying
twice is harmless.

Layout: ``<warehouse file>.journal/generate-<pid>-<ms>-<segment>.jsonl``, one JSON
record per line. A live writer holds an exclusive ``flock`` on each of its segments; a
segment nobody holds belongs to a dead process and may be replayed.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import time
from dataclasses import dataclass
from pathlib import Path

import orjson

from curator.durable import read_jsonl_durable, try_lock
from curator.warehouse import Warehouse

SEGMENT_BYTES = 8 * 1024 * 1024


def journal_dir(wh: Warehouse) -> Path:
    return Path(str(wh.path) + ".journal")


@dataclass
class _Segment:
    path: Path
    fh: object
    written: int = 0        # records fsync'd into it
    committed: int = 0      # of those, records now in the warehouse
    closed: bool = False
    bytes: int = 0


@dataclass
class _Pending:
    records: list[dict]
    data: bytes
    on_durable: object          # called once the records are on disk


class Journal:
    """Append-only, fsync'd, group-committed: records appended while an fsync is in
    progress share the next one. Appending does not wait: the caller's callback runs
    once the records are on disk, and only then does a response count as done. Records
    on disk wait in :meth:`take` for the committer, so a worker cancelled after its
    response was received (Ctrl-C) does not keep its records from the warehouse."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.dir = directory
        self.stem = f"generate-{os.getpid()}-{int(time.time() * 1000)}"
        self.segments: list[_Segment] = []
        self._seq = 0
        self._queue: list[_Pending] = []
        self._durable: list[tuple[_Segment, list[dict]]] = []
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._stopping = False
        self._open_segment()
        self.fsyncs = 0
        self.error: BaseException | None = None

    def _open_segment(self) -> _Segment:
        path = self.dir / f"{self.stem}-{self._seq:04d}.jsonl"
        self._seq += 1
        fh = open(path, "ab")
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        seg = _Segment(path, fh)
        self.segments.append(seg)
        return seg

    @property
    def current(self) -> _Segment:
        return self.segments[-1]

    def start(self) -> None:
        self._wake = asyncio.Event()
        self._task = asyncio.ensure_future(self._flusher())

    def append(self, records: list[dict], on_durable=None) -> None:
        """Queue records for the next fsync; ``on_durable()`` runs once they are on disk."""
        data = b"".join(orjson.dumps(r) + b"\n" for r in records)
        self._queue.append(_Pending(records, data, on_durable))
        self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._queue)

    def take(self) -> list[tuple[_Segment, list[dict]]]:
        """Records on disk and not yet handed to the warehouse, by segment."""
        out, self._durable = self._durable, []
        return out

    def untake(self, batch: list[tuple[_Segment, list[dict]]]) -> None:
        """Give records back after a failed warehouse write (they are retried)."""
        self._durable = batch + self._durable

    @property
    def backlog(self) -> int:
        return sum(len(r) for _, r in self._durable)

    def _write_sync(self, blob: bytes, seg: _Segment) -> None:
        seg.fh.write(blob)
        seg.fh.flush()
        os.fsync(seg.fh.fileno())

    async def _flusher(self) -> None:
        while True:
            if not self._queue:
                if self._stopping:
                    return
                await self._wake.wait()
                self._wake.clear()
                continue
            batch, self._queue = self._queue, []
            seg = self.current
            blob = b"".join(p.data for p in batch)
            try:
                # not cancellable half-way: stop() waits for the queue to drain instead
                await asyncio.shield(asyncio.to_thread(self._write_sync, blob, seg))
            except Exception as exc:
                # A journal that cannot be written makes nothing durable: stop the run.
                self.error = exc
                for p in batch:
                    if p.on_durable is not None:
                        p.on_durable(exc)
                continue
            self.fsyncs += 1
            seg.bytes += len(blob)
            records = [r for p in batch for r in p.records]
            seg.written += len(records)
            self._durable.append((seg, records))
            for p in batch:
                if p.on_durable is not None:
                    p.on_durable(None)
            if seg.bytes >= SEGMENT_BYTES:
                seg.closed = True
                self._open_segment()

    async def stop(self) -> None:
        """Write what is queued, then stop the flusher."""
        if self._task is None:
            return
        self._stopping = True
        self._wake.set()
        await asyncio.shield(self._task)
        self._task = None

    def committed(self, seg: _Segment, count: int) -> None:
        """``count`` records of ``seg`` are now in the warehouse."""
        seg.committed += count
        for s in list(self.segments):
            if s.closed and s.committed >= s.written:
                self._remove(s)

    def _remove(self, seg: _Segment) -> None:
        # Unlink before unlocking: a replayer must never find the file unlocked while
        # its records are still only in the journal.
        try:
            seg.path.unlink()
        except FileNotFoundError:
            pass
        seg.fh.close()
        self.segments.remove(seg)

    def close(self) -> bool:
        """At the end of a generation: segments whose records are all in the warehouse
        are deleted; any others stay on disk for the next run to replay. Returns True
        if nothing was left behind."""
        clean = True
        for seg in list(self.segments):
            if seg.committed >= seg.written:
                self._remove(seg)
            else:
                clean = False
                seg.fh.close()
                self.segments.remove(seg)
        try:
            self.dir.rmdir()
        except OSError:
            pass
        return clean


def read_segment(path: Path) -> list[dict]:
    """Records of a journal segment; a torn last line (the writer died mid-write, before
    its fsync returned, so nobody counted it as done) is ignored."""
    return read_jsonl_durable(path, loads=orjson.loads)


def replay(wh: Warehouse, chunk: int = 20_000, keep_dir: bool = False) -> int:
    """Write journals of dead generations into the warehouse and delete them. Returns
    the number of records replayed. Segments held by a live process are left alone.
    The emptied directory is removed unless ``keep_dir``."""
    from curator.teachers.store import write_records

    d = journal_dir(wh)
    if not d.is_dir():
        return 0
    total = 0
    for path in sorted(d.glob("*.jsonl")):
        with try_lock(path) as (_, locked):
            if not locked:
                continue                      # gone, or its writer is alive
            if not path.exists():
                continue                      # replayed by someone else meanwhile
            records = read_segment(path)
            for i in range(0, len(records), chunk):
                with wh.write() as con:
                    write_records(con, records[i:i + chunk])
            total += len(records)
            path.unlink()
    if keep_dir:
        return total
    try:
        d.rmdir()
    except OSError:
        pass
    return total
