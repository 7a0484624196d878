"""One payer per sample: claims that keep two `curator generate` processes on the same
warehouse from requesting (and paying for) the same samples.

Before it sends anything, a generation *claims* the samples it is about to request: it
writes them to ``<warehouse>.journal/claim-<pid>-<ms>.json`` and holds an exclusive
``flock`` on that file until it ends. Working out what is missing and writing the claim
happen under an exclusive ``flock`` on the journal directory itself, so a second process
plans only after the first one's claim is on disk, and leaves out every sample a live
process has claimed: it takes the disjoint share that is left (often nothing) and says
who has the rest. A claim nobody holds belongs to a dead process (SIGKILL, power loss)
and is deleted; what that process received is in its journal, which is replayed under
the same lock before planning, so nothing it was paid for is requested again.

The lock is on the directory (not on a file in it) so that the journal directory can
still disappear when the last generation is done with it.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from curator.durable import try_lock
from curator.teachers.journal import journal_dir, replay
from curator.warehouse import Warehouse


@dataclass
class Claimed:
    """What other live processes hold, of what this plan would have requested."""
    samples: int = 0
    pids: list[int] = field(default_factory=list)


@contextmanager
def _locked_dir(d: Path) -> Iterator[None]:
    """An exclusive flock on the directory ``d`` (created if needed)."""
    while True:
        d.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:
            continue                      # removed by a generation ending just now
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                same = os.stat(d).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)                      # the directory was replaced meanwhile: again
    try:
        yield
    finally:
        os.close(fd)


def _live_claims(d: Path, mine: Path) -> tuple[dict[tuple[str, str], set[int]], list[int]]:
    """(run_id, problem_id) -> sample indexes claimed by other live processes, and their
    pids. Claims of dead processes are deleted. Call with the directory locked."""
    claimed: dict[tuple[str, str], set[int]] = {}
    pids: list[int] = []
    for path in sorted(d.glob("claim-*.json")):
        if path == mine:
            continue
        with try_lock(path, shared=True) as (fh, locked):
            if fh is None:
                continue
            if locked:                    # its owner is dead: the claim is void
                path.unlink(missing_ok=True)
                continue
            # its owner is alive: the claim holds
            try:
                doc = orjson.loads(fh.read())
            except orjson.JSONDecodeError:
                continue                  # cannot happen: written whole under the lock
        pids.append(int(doc.get("pid", 0)))
        for run_id, problem_id, indexes in doc.get("samples", []):
            claimed.setdefault((run_id, problem_id), set()).update(indexes)
    return claimed, pids


class Claim:
    """A held claim; :meth:`release` (or the process's death) lets go of it."""

    def __init__(self, d: Path) -> None:
        """Create the (empty) claim file at once: from then on the directory is not
        empty, so nobody removes it while this process plans."""
        self.dir = d
        self.path = d / f"claim-{os.getpid()}-{time.time_ns()}.json"
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self._fh = os.fdopen(fd, "wb")
        fcntl.flock(fd, fcntl.LOCK_EX)

    def write(self, samples: list[list]) -> None:
        self._fh.write(orjson.dumps({"pid": os.getpid(), "started": time.time(),
                                     "samples": samples}))
        self._fh.flush()

    def release(self) -> None:
        if self._fh is None:
            return
        # Unlink before unlocking: nobody may find it unlocked and count it as dead
        # while its owner is still finishing.
        self.path.unlink(missing_ok=True)
        self._fh.close()
        self._fh = None
        try:
            self.dir.rmdir()
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT):
                raise


@contextmanager
def claim_missing(wh: Warehouse, make_plan: Callable[[], object]):
    """Plan (``make_plan()``, which reads what is missing from the warehouse) and claim
    the plan's samples, leaving out those that live processes have claimed. Yields
    ``(plan, claimed_elsewhere, replayed)``; the claim is held until the block ends."""
    d = journal_dir(wh)
    claim = None
    while claim is None:
        with _locked_dir(d):
            try:
                claim = Claim(d)
            except FileNotFoundError:
                continue              # the directory went away just after the lock: again
            try:
                replayed = replay(wh, keep_dir=True)
                plan = make_plan()
                others, pids = _live_claims(d, claim.path)
                elsewhere = Claimed(pids=sorted(set(pids)))
                if others:
                    elsewhere.samples = _leave_out(plan, others)
                claim.write([[j.run.run_id, j.problem_id, list(j.indexes)] for j in plan.jobs])
            except BaseException:
                claim.release()       # and no empty directory left behind a refused plan
                raise
    try:
        yield plan, elsewhere, replayed
    finally:
        claim.release()


def _leave_out(plan, others: dict[tuple[str, str], set[int]]) -> int:
    """Drop the claimed sample indexes from the plan's jobs; returns how many."""
    jobs, dropped = [], 0
    by_run = {s.run_id: s for s in plan.summaries}
    for job in plan.jobs:
        taken = others.get((job.run.run_id, job.problem_id))
        if taken:
            keep = [i for i in job.indexes if i not in taken]
            gone = len(job.indexes) - len(keep)
            if gone:
                dropped += gone
                s = by_run[job.run.run_id]
                s.missing -= gone
                if not keep:
                    s.requests -= 1
                    continue
                job.indexes = keep
        jobs.append(job)
    plan.jobs = jobs
    return dropped
