"""Worker processes that enforce a hard wall-clock limit on every grading task.

Signals (``SIGALRM``, what Math-Verify relies on) only work in the main thread and do
not interrupt long C-level loops; a process can always be killed. Each worker records in
a small shared memory block which task of its batch it is on and since when; the parent
kills a worker whose current task has run past the limit, records that task as a
timeout, swaps in a spare worker that is already warm, and re-queues the rest of the
batch.

Workers are fresh interpreters (``python -m curator.grading.worker``), not forks: the
parent may hold DuckDB threads, which must never be forked, and unlike multiprocessing's
spawn/forkserver a fresh interpreter never re-imports the caller's ``__main__`` script.
They talk to the parent over a socket pair with pickled messages and ignore Ctrl-C: the
parent decides what happens on an interrupt (it commits what is finished and then stops
them).
"""

from __future__ import annotations

import mmap
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

# Memory a worker may use (address space); a runaway sympy computation gets a
# MemoryError instead of pushing the shared machine into swap.
WORKER_MEMORY_BYTES = int(os.environ.get("CURATOR_GRADER_WORKER_MEMORY", 4 * 1024 ** 3))
_POLL = 0.02
_STATUS = struct.Struct("dd")  # (task index in batch, monotonic start time; 0 = idle)
_ROOT = str(Path(__file__).resolve().parent.parent.parent)


class TaskTimeout(Exception):
    """The task ran past its time limit and its worker was killed."""


class WorkerCrashed(Exception):
    """The worker died while running the task."""


class Worker:
    """One worker interpreter with a socket and a shared (task index, start time) slot."""

    def __init__(self):
        parent_sock, child_sock = socket.socketpair()
        self._status_fd = os.memfd_create("curator-grader-status")
        os.ftruncate(self._status_fd, _STATUS.size)
        self._status = mmap.mmap(self._status_fd, _STATUS.size)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([_ROOT] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        env["CURATOR_GRADER_WORKER_MEMORY"] = str(WORKER_MEMORY_BYTES)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "curator.grading.worker", str(child_sock.fileno()),
             str(self._status_fd)],
            pass_fds=(child_sock.fileno(), self._status_fd), env=env,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            start_new_session=True)  # Ctrl-C in the terminal reaches the parent only
        child_sock.close()
        self.conn = Connection(parent_sock.detach())
        self.batch: list | None = None

    def alive(self) -> bool:
        return self.proc.poll() is None

    def send(self, fn: Callable, batch: list) -> None:
        self.batch = batch
        self._status[:] = _STATUS.pack(0.0, 0.0)
        self.conn.send((fn, [args for _, args in batch]))

    def running_since(self) -> tuple[int, float] | None:
        """(index in the batch, start time) of the task running now, read consistently."""
        for _ in range(3):
            a = _STATUS.unpack(self._status[:])
            b = _STATUS.unpack(self._status[:])
            if a == b:
                return (int(a[0]), a[1]) if a[1] > 0 else None
        return None

    def kill(self) -> None:
        try:
            self.proc.kill()
        except Exception:
            pass
        try:
            self.proc.wait(timeout=5)
        except Exception:
            pass
        self._close()

    def stop(self) -> None:
        try:
            self.conn.send(None)
            self.proc.wait(timeout=2)
        except Exception:
            self.kill()
            return
        self._close()

    def _close(self) -> None:
        for close in (self.conn.close, self._status.close, lambda: os.close(self._status_fd)):
            try:
                close()
            except Exception:
                pass


class _Spares:
    """Warm workers kept ready so that replacing a killed one costs no start-up time."""

    def __init__(self):
        self._ready: list[Worker] = []

    def take(self) -> Worker:
        w = None
        while self._ready:
            w = self._ready.pop()
            if w.alive():
                break
            w.kill()
            w = None
        if w is None:
            w = Worker()
        self._ready.append(Worker())
        return w

    def close(self) -> None:
        for w in self._ready:
            w.stop()
        self._ready.clear()


class Guard:
    """One worker for calls made one at a time from the main process (``grade()``,
    ``equivalent()``): started on first use, replaced after a timeout."""

    def __init__(self):
        self._worker: Worker | None = None
        self._spares: _Spares | None = None
        self._lock = threading.Lock()

    def call(self, fn: Callable, args: tuple, timeout: float) -> Any:
        with self._lock:
            if self._worker is None or not self._worker.alive():
                self._worker = self._spares.take() if self._spares else Worker()
            w = self._worker
            w.send(fn, [(0, args)])
            deadline = None
            while True:
                if w.conn.poll(_POLL):
                    try:
                        (ok, value), = w.conn.recv()
                    except (EOFError, OSError):
                        w.kill()
                        self._worker = None
                        raise WorkerCrashed("grading worker died")
                    w.batch = None
                    if not ok:
                        raise RuntimeError(value)
                    return value
                if not w.alive():
                    w.kill()
                    self._worker = None
                    raise WorkerCrashed("grading worker died")
                run = w.running_since()
                if run is not None:
                    deadline = run[1] + timeout
                if deadline is not None and time.monotonic() > deadline:
                    w.kill()
                    self._worker = None
                    # a caller that timed out once is likely to meet hard inputs again:
                    # keep a warm spare from now on
                    if self._spares is None:
                        self._spares = _Spares()
                    raise TaskTimeout(f"no verdict within {timeout:g}s")

    def close(self) -> None:
        with self._lock:
            if self._worker is not None:
                self._worker.stop()
                self._worker = None
            if self._spares is not None:
                self._spares.close()


TIMEOUT = object()
CRASHED = object()


def run_tasks(fn: Callable, tasks: Iterable[tuple[Any, tuple]], *, workers: int,
              timeout: float, batch_size: int = 32) -> Iterator[tuple[Any, bool, Any]]:
    """Run ``fn(*args)`` for every ``(key, args)`` in worker processes; yield
    ``(key, ok, value)`` as results arrive (any order). ``value`` is :data:`TIMEOUT`
    when the task ran past ``timeout`` seconds (its worker is killed and replaced),
    :data:`CRASHED` when its worker died, or the exception text when ``ok`` is False.

    ``tasks`` is consumed lazily, so the caller can stream from a database. Closing the
    generator (or Ctrl-C in the caller) stops every worker.
    """
    source = iter(tasks)
    queue: deque = deque()
    exhausted = False
    pool = [Worker() for _ in range(max(1, workers))]
    spares = _Spares()
    busy: dict[int, Worker] = {}

    def refill() -> None:
        nonlocal exhausted
        while not exhausted and len(queue) < batch_size * len(pool) * 2:
            try:
                queue.append(next(source))
            except StopIteration:
                exhausted = True

    try:
        while True:
            refill()
            for i, w in enumerate(pool):
                if i not in busy and queue:
                    batch = [queue.popleft() for _ in range(min(batch_size, len(queue)))]
                    w.send(fn, batch)
                    busy[i] = w
            if not busy:
                if exhausted and not queue:
                    return
                continue
            ready = wait([w.conn for w in busy.values()], timeout=_POLL)
            for i, w in list(busy.items()):
                if w.conn in ready:
                    try:
                        results = w.conn.recv()
                    except (EOFError, OSError):
                        results = None
                    batch = w.batch
                    if results is not None:
                        del busy[i]
                        w.batch = None
                        for (key, _), (ok, value) in zip(batch, results):
                            yield key, ok, value
                        continue
                    # the worker died: blame the task it was on, retry the others
                    run = w.running_since()
                    idx = run[0] if run else 0
                    yield from _replace(pool, spares, busy, i, w, batch, idx, CRASHED, queue)
                    continue
                run = w.running_since()
                if run is not None and time.monotonic() - run[1] > timeout:
                    yield from _replace(pool, spares, busy, i, w, w.batch, run[0], TIMEOUT, queue)
                elif not w.alive() and not w.conn.poll():
                    run = w.running_since()
                    yield from _replace(pool, spares, busy, i, w, w.batch, run[0] if run else 0,
                                        CRASHED, queue)
    finally:
        for w in pool:
            if w.batch is not None:
                w.kill()
            else:
                w.stop()
        spares.close()


def _replace(pool, spares, busy, i, w, batch, idx, what, queue):
    w.kill()
    del busy[i]
    pool[i] = spares.take()
    idx = min(max(idx, 0), len(batch) - 1)
    # retry the rest of the batch first, in order, before new work
    for item in reversed(batch[:idx] + batch[idx + 1:]):
        queue.appendleft(item)
    key = batch[idx][0]
    yield key, False, what
