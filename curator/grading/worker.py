"""Entry point of a grading worker process (``python -m curator.grading.worker SOCK STATUS``).

Started by :mod:`curator.grading.pool`; not meant to be run by hand. It receives
``(function, [args, ...])`` batches over the socket, runs them one by one while
publishing (task index, start time) in the shared status block, and sends back
``[(ok, value), ...]``. A ``None`` message ends it.
"""

from __future__ import annotations

import mmap
import os
import signal
import struct
import sys
import time
from multiprocessing.connection import Connection

_STATUS = struct.Struct("dd")


def main(sock_fd: int, status_fd: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        import resource
        limit = int(os.environ.get("CURATOR_GRADER_WORKER_MEMORY", 4 * 1024 ** 3))
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (ImportError, ValueError, OSError):
        pass
    status = mmap.mmap(status_fd, _STATUS.size)
    conn = Connection(sock_fd)
    # import the grader before the first task, so start-up never counts against a limit
    import curator.grading.api  # noqa: F401
    import curator.grading.symbolic  # noqa: F401
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        fn, tasks = msg
        out = []
        for i, args in enumerate(tasks):
            status[:] = _STATUS.pack(float(i), time.monotonic())
            try:
                out.append((True, fn(*args)))
            except MemoryError:
                out.append((False, "MemoryError"))
            except Exception as exc:  # a task never takes the worker down
                out.append((False, f"{type(exc).__name__}: {exc}"[:300]))
        status[:] = _STATUS.pack(0.0, 0.0)
        try:
            conn.send(out)
        except (EOFError, OSError):
            return


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))
