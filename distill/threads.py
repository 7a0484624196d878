"""How many CPU threads torch uses in a ``distill`` process, chosen once at start-up.

torch's default is one intra-op thread per core. On a small or shared machine that is
the slowest choice for this project's work: the tensors of a tiny or small model are too
small to split (each op pays OpenMP's fork/join and spin-wait for a few microseconds of
work), and when the cores are also busy with other processes (``distill compare``'s grader
workers, other jobs) a thread that loses its core stalls every op at the barrier
(``bench/bench_threads.py``: 2 cores, a busy machine). So, unless told otherwise:

- with 2 cores or fewer: 1 thread;
- otherwise: the cores this process may use, divided by the processes of the job on this
  machine (``LOCAL_WORLD_SIZE`` under ``torchrun``/``accelerate``), at least 1.

Told otherwise: ``--threads N`` (``distill --threads N COMMAND``), or ``DISTILL_THREADS=N``;
``0`` keeps torch's own default. An ``OMP_NUM_THREADS`` set by the user is respected as is.
The choice is made before torch is imported (so OpenMP and MKL start with it and child
processes inherit it) and said once, on stderr, when a model is first loaded.

Imports no torch.
"""

from __future__ import annotations

import os
import sys

ENV = "DISTILL_THREADS"

_choice: dict | None = None
_announced = False


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def auto_threads(cores: int, processes: int = 1) -> int:
    """The rule: 1 thread on 2 cores or fewer, else cores / processes (at least 1)."""
    if cores <= 2:
        return 1
    return max(1, cores // max(1, processes))


def choose(threads: int | None = None, environ=None) -> dict:
    """``{"threads": n or None (torch's default), "source": why}`` from ``threads``
    (``--threads``), ``DISTILL_THREADS``, ``OMP_NUM_THREADS`` or the rule, in that order."""
    env = os.environ if environ is None else environ
    from curator.errors import CuratorError
    if threads is None and env.get(ENV, "").strip():
        try:
            threads = int(env[ENV])
        except ValueError:
            raise CuratorError(f"{ENV}={env[ENV]!r}: give a whole number of threads "
                               f"(0: torch's default)") from None
        source = ENV
    else:
        source = "--threads"
    if threads is not None:
        if threads < 0:
            raise CuratorError(f"{source} {threads}: give 0 (torch's default) or more threads")
        return {"threads": threads or None, "source": source}
    if env.get("OMP_NUM_THREADS", "").strip():
        try:
            return {"threads": int(env["OMP_NUM_THREADS"]), "source": "OMP_NUM_THREADS"}
        except ValueError:
            return {"threads": None, "source": "OMP_NUM_THREADS (not a number: torch's default)"}
    cores = usable_cores()
    procs = int(env.get("LOCAL_WORLD_SIZE", "1") or 1)
    n = auto_threads(cores, procs)
    per = f" / {procs} processes" if procs > 1 else ""
    return {"threads": n, "source": f"auto: {cores} cores{per}"}


def configure(threads: int | None = None) -> dict:
    """Choose the thread count and put it in the environment (``OMP_NUM_THREADS``,
    ``MKL_NUM_THREADS``; ``TOKENIZERS_PARALLELISM=false`` with one thread), and into torch
    if it is already imported. Call before torch is imported; the last call wins."""
    global _choice
    choice = choose(threads)
    n = choice["threads"]
    if n is not None and choice["source"] != "OMP_NUM_THREADS":
        os.environ["OMP_NUM_THREADS"] = str(n)
        os.environ["MKL_NUM_THREADS"] = str(n)
        if n == 1:
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(n)
    _choice = choice
    return choice


def announce() -> None:
    """Say once per process, on stderr, how many threads torch uses and why (main process
    of a multi-process job only)."""
    global _announced
    if _announced or _choice is None or os.environ.get("RANK", "0") != "0":
        return
    _announced = True
    import torch
    n = torch.get_num_threads()
    how = "--threads N or DISTILL_THREADS=N to change"
    print(f"distill: torch uses {n} CPU thread{'s' if n != 1 else ''} ({_choice['source']}; "
          f"{how})", file=sys.stderr, flush=True)
