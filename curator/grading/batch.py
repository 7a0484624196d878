"""Grade every ungraded sample of a warehouse: what ``curator grade`` and
``curator generate --grade`` run.

Two passes, both committing as they go, so an interrupt loses at most the verdicts of
the last second:

1. **In this process**, page by page of samples (keyset pagination on ``sample_id``, so
   a read holds the file only briefly): extract each rationale's final answer, group the
   samples by ``(reference, answer, approximation asked)`` (the 8 rationales of a
   problem mostly agree, so there are far fewer pairs than samples), and decide every
   pair that needs no sympy (exact text, numbers, structure, the numeric screen). Those
   verdicts are written at once.
2. **In worker processes** (:mod:`curator.grading.pool`), the pairs that need sympy, each
   under a hard wall-clock limit. A pair that runs past it is a ``timeout`` verdict, not
   an error. Verdicts are written in batches as they arrive.

Samples without a completion (failed requests) are not graded; samples whose problem has
no reference answer are skipped and counted (a verdict against nothing would be a false
negative).
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import pyarrow as pa

from curator.grading import api
from curator.grading.compare import UNPARSEABLE, NeedsSympy, Verdict
from curator.errors import CuratorError, WarehouseBusy, is_interrupt
from curator.warehouse import Warehouse

PAGE = 5_000
FLUSH_ROWS = 5_000
FLUSH_SECONDS = 1.0
# While the warehouse is locked by another process: how often a commit is tried again,
# how long each try waits for the lock, and how often the wait is reported.
BUSY_RETRY_SECONDS = 3.0
BUSY_TRY_SECONDS = 0.2
BUSY_SAY_SECONDS = 30.0
# Fewer sympy pairs than this go through the one warm guard worker instead of a pool.
SMALL = 48


@dataclass
class GradeReport:
    grader_version: str
    graded: int = 0
    status: Counter = field(default_factory=Counter)
    skipped_no_reference: int = 0
    pairs: int = 0              # distinct (reference, answer) pairs compared
    sympy_pairs: int = 0        # of which needed sympy in a worker
    seconds: float = 0.0
    sympy_seconds: float = 0.0  # of which the worker pass

    @property
    def positives(self) -> int:
        return self.status.get("correct", 0)

    @property
    def negatives(self) -> int:
        return self.graded - self.positives

    def rows(self) -> list[tuple]:
        return [(s, n) for s, n in sorted(self.status.items(), key=lambda kv: -kv[1])]


_COLUMNS = ("sample_id", "correct", "status", "extracted", "normalized", "rule", "extraction")


def _say(msg: str) -> None:
    print(f"grading: {msg}", file=sys.stderr, flush=True)


class _Writer:
    """Buffers verdict rows and commits them in short transactions.

    While another process holds the warehouse (a long `curator sql`, a notebook), a
    commit cannot happen: the verdicts stay buffered, grading goes on (reading is still
    possible beside a reader), and the commit is tried again every few seconds, each
    time only briefly. Only the last commit waits the full lock timeout."""

    def __init__(self, wh: Warehouse, version: str, report: GradeReport,
                 progress: Callable[[int], None] | None,
                 say: Callable[[str], None] | None = None):
        self.wh, self.version, self.report, self.progress = wh, version, report, progress
        self.say = say or _say
        self.rows: list[tuple] = []
        self.last = time.monotonic()
        self.registered = False
        self.busy_since: float | None = None     # first failed commit of the current wait
        self._said = 0.0

    def add(self, sample_id: str, g: api.Grade) -> None:
        self.rows.append((sample_id, *g.as_row()))
        self.report.status[g.status] += 1
        gap = BUSY_RETRY_SECONDS if self.busy_since is not None else FLUSH_SECONDS
        if (len(self.rows) >= FLUSH_ROWS and self.busy_since is None) \
                or time.monotonic() - self.last >= gap:
            self.flush(final=False)

    def flush(self, final: bool = True) -> None:
        """Commit the buffered verdicts. Not ``final``: a locked warehouse keeps them
        buffered (for the next try); ``final``: waits the full lock timeout and raises
        :class:`WarehouseBusy` if it stays locked."""
        self.last = time.monotonic()
        if not self.rows:
            return
        try:
            self._commit(None if final else BUSY_TRY_SECONDS)
        except WarehouseBusy:
            now = time.monotonic()
            if self.busy_since is None:
                self.busy_since = now
            if final:
                raise
            if now - self._said >= BUSY_SAY_SECONDS:
                self._said = now
                self.say(f"the warehouse is locked by another process (for "
                         f"{now - self.busy_since:.0f}s now); {len(self.rows):,} verdicts wait "
                         f"to be written and grading goes on; still trying")
            return
        if self.busy_since is not None:
            self.say(f"the warehouse is free again after "
                     f"{time.monotonic() - self.busy_since:.0f}s; verdicts written")
            self.busy_since = None
            self._said = 0.0

    def _commit(self, lock_timeout: float | None) -> None:
        cols = list(zip(*self.rows))
        table = pa.table({name: pa.array(col, type=pa.bool_() if name == "correct" else pa.string())
                          for name, col in zip(_COLUMNS, cols)})
        with self.wh.write(lock_timeout=lock_timeout) as con:
            if not self.registered:
                con.execute("INSERT OR IGNORE INTO grader_versions (grader_version) VALUES (?)",
                            [self.version])
                self.registered = True
            con.register("new_grades", table)
            con.execute("""INSERT OR IGNORE INTO grades (sample_id, grader_version, correct, status,
                                                         extracted, normalized, rule, extraction)
                           SELECT sample_id, ?, correct, status, extracted, normalized, rule,
                                  extraction FROM new_grades""", [self.version])
            con.unregister("new_grades")
        n = len(self.rows)
        self.report.graded += n
        self.rows = []
        if self.progress:
            self.progress(n)


def _pending(run_ids: list[str] | None) -> str:
    """The condition on ``samples s`` for "not graded by the version yet" (of the runs);
    parameters: the run ids, then the grader version."""
    runs = f"AND s.run_id IN ({', '.join('?' for _ in run_ids)})" if run_ids else ""
    return f"""s.completion IS NOT NULL {runs}
          AND NOT EXISTS (SELECT 1 FROM grades g
                          WHERE g.sample_id = s.sample_id AND g.grader_version = ?)"""


def count_pending(wh: Warehouse, run_ids: list[str] | None = None,
                  version: str = api.GRADER_VERSION) -> int:
    with wh.read() as con:
        return con.execute(f"SELECT count(*) FROM samples s WHERE {_pending(run_ids)}",
                           [*(run_ids or []), version]).fetchall()[0][0]


def _pages(wh: Warehouse, run_ids: list[str] | None, version: str) -> Iterable[list[tuple]]:
    last = ""
    sql = f"""SELECT s.sample_id, p.reference_answer, s.completion, p.question
              FROM samples s JOIN problems p USING (problem_id)
              WHERE s.sample_id > ? AND {_pending(run_ids)}
              ORDER BY s.sample_id LIMIT {PAGE}"""
    while True:
        with wh.read() as con:
            rows = con.execute(sql, [last, *(run_ids or []), version]).fetchall()
        if not rows:
            return
        yield rows
        last = rows[-1][0]


def _worker_verdict(ok: bool, value) -> Verdict | None:
    from curator.grading.pool import CRASHED, TIMEOUT
    if value is TIMEOUT:
        return None
    if value is CRASHED:
        return Verdict(UNPARSEABLE, "worker-crashed")
    if not ok:
        return Verdict(UNPARSEABLE, f"error: {value}"[:120])
    outcome, rule = value
    return Verdict(outcome, rule)


@dataclass
class StreamStats:
    skipped_no_reference: int = 0
    pairs: int = 0
    sympy_pairs: int = 0
    sympy_seconds: float = 0.0


def grade_stream(items: Iterable[tuple[object, str | None, str, str | None]], *,
                 workers: int | None = None, timeout: float = api.DEFAULT_TIMEOUT,
                 stats: StreamStats | None = None) -> Iterator[tuple[object, api.Grade]]:
    """Grade ``(key, reference, completion, question)`` items; yield ``(key, Grade)``.

    Verdicts that need no sympy are yielded as the items are read; the pairs that need
    sympy are decided at the end in worker processes (each under ``timeout``) and
    yielded as they arrive. Items without a reference are skipped (counted in
    ``stats``). Every distinct (reference, answer) pair is compared once.
    """
    stats = stats if stats is not None else StreamStats()
    # (reference, answer, approx) -> [(key, extraction), ...] waiting for sympy
    waiting: dict[tuple[str, str, bool], list[tuple[object, object]]] = defaultdict(list)
    decided: dict[tuple[str, str, bool], Verdict] = {}
    for key, reference, completion, question in items:
        if reference is None or not str(reference).strip():
            stats.skipped_no_reference += 1
            continue
        reference = str(reference)
        ext, approx = api.extraction_step(reference, completion, question)
        if not api.has_answer(ext):
            yield key, api.no_answer(ext)
            continue
        pair = (reference, ext.answer, approx)
        v = decided.get(pair)
        if v is None and pair not in waiting:
            try:
                v = api._compare_cached(reference, ext.answer, approx, False)
            except NeedsSympy:
                pass
            else:
                decided[pair] = v
        if v is None:
            waiting[pair].append((key, ext))
        else:
            yield key, api.finish(ext, v)
    stats.pairs = len(decided) + len(waiting)
    stats.sympy_pairs = len(waiting)
    t1 = time.monotonic()
    for pair, v in _sympy_verdicts(list(waiting), workers=workers, timeout=timeout):
        for key, ext in waiting.pop(pair):
            yield key, api.finish(ext, v)
    stats.sympy_seconds = time.monotonic() - t1


def check_grade_options(timeout: float, workers: int | None) -> None:
    """Refuse a timeout or worker count grading cannot run with (messages name the options)."""
    if not timeout > 0:  # also refuses nan
        raise CuratorError("--timeout must be positive")
    if workers is not None and workers < 1:
        raise CuratorError("--workers must be at least 1")


def grade_pending(wh: Warehouse, *, run_ids: list[str] | None = None, workers: int | None = None,
                  timeout: float = api.DEFAULT_TIMEOUT, progress: Callable[[int], None] | None = None,
                  version: str = api.GRADER_VERSION) -> GradeReport:
    """Grade every sample with a completion that ``version`` has not graded yet (of
    ``run_ids`` only, when given). ``progress(n)`` is called with the number of verdicts
    each commit adds. Safe to interrupt: every committed verdict stays, and the next call
    grades the rest; an interrupt leaves as KeyboardInterrupt, also when it stopped a
    DuckDB query."""
    check_grade_options(timeout, workers)
    t0 = time.monotonic()
    report = GradeReport(version)
    writer = _Writer(wh, version, report, progress)
    stats = StreamStats()
    items = (row for page in _pages(wh, run_ids, version) for row in page)
    try:
        try:
            for sample_id, g in grade_stream(items, workers=workers, timeout=timeout, stats=stats):
                writer.add(sample_id, g)
        finally:
            writer.flush()
            report.seconds = time.monotonic() - t0
            report.skipped_no_reference = stats.skipped_no_reference
            report.pairs, report.sympy_pairs = stats.pairs, stats.sympy_pairs
            report.sympy_seconds = stats.sympy_seconds
    except WarehouseBusy as exc:
        raise WarehouseBusy(_what_is_left(wh, run_ids, version, report, writer, exc)) from exc
    except Exception as exc:
        # Ctrl-C during a query reaches us as DuckDB's own error: it is an interrupt.
        if is_interrupt(exc) and not isinstance(exc, CuratorError):
            raise KeyboardInterrupt from None
        raise
    return report


def _what_is_left(wh: Warehouse, run_ids: list[str] | None, version: str,
                  report: GradeReport, writer: _Writer, exc: WarehouseBusy) -> str:
    """What a grading that could not write says is left undone."""
    try:
        left = f"{count_pending(wh, run_ids, version):,}"
    except WarehouseBusy:
        left = "the other"
    unwritten = (f"; {len(writer.rows):,} verdicts computed could not be written"
                 if writer.rows else "")
    return (f"grading ended with work undone: {report.graded:,} verdicts written{unwritten}, "
            f"and {left} samples are still ungraded. {exc} Re-run `curator grade` (it "
            f"grades only what is left) once the other process lets go.")


def _sympy_verdicts(keys: list[tuple[str, str, bool]], *, workers: int | None, timeout: float):
    """(key, verdict or None for a timeout) for every key, as they are decided."""
    if not keys:
        return
    if len(keys) < SMALL:
        for key in keys:
            yield key, api._verdict(*key, sympy=False, timeout=timeout)
        return
    from curator.grading.pool import run_tasks
    workers = workers or os.cpu_count() or 1
    tasks = ((key, key) for key in keys)
    for key, ok, value in run_tasks(api.compare_answers, tasks, workers=min(workers, len(keys)),
                                    timeout=timeout, batch_size=8):
        yield key, _worker_verdict(ok, value)
