"""Progress of a generation: a live display in a terminal, or a plain line every so
often for logs (``--quiet``). Both only read the engine's :class:`Stats`."""

from __future__ import annotations

import sys
import threading
import time

from rich.console import Console
from rich.live import Live
from rich.table import Table

from curator.teachers.engine import Stats


def _eta(st: Stats) -> str:
    left = st.total - st.done - st.failed
    rate = st.rates()[0]
    recent = list(st.recent)
    per_sample = rate and (sum(s for _, s, _ in recent) / max(1, len(recent)))
    if left <= 0:
        return "0s"
    if not per_sample:
        return "?"
    secs = left / (rate * per_sample)
    return f"{secs / 3600:.1f}h" if secs > 5400 else f"{secs / 60:.1f}m" if secs > 90 else f"{secs:.0f}s"


def summary_line(st: Stats) -> str:
    req_s, tok_s = st.rates()
    spend = f"${st.spend:,.4f}" if st.priced else "unpriced"
    return (f"{st.done}/{st.total} samples ({st.failed} failed, {st.truncated} truncated) | "
            f"{req_s:.1f} req/s | {tok_s:,.0f} tok/s | {spend} | ETA {_eta(st)} | "
            f"in flight {st.in_flight} | failed attempts: {st.failed_attempts()}"
            + (f" | waiting: {st.waiting}" if st.waiting else ""))


class _View:
    def __init__(self, st: Stats, title: str) -> None:
        self.st, self.title = st, title

    def __rich__(self) -> Table:
        st = self.st
        req_s, tok_s = st.rates()
        t = Table(title=self.title, show_header=False, box=None, pad_edge=False)
        t.add_column(style="bold")
        t.add_column()
        pct = 100.0 * st.done / st.total if st.total else 100.0
        t.add_row("samples", f"{st.done:,}/{st.total:,} ({pct:.1f}%)  failed {st.failed:,}  "
                             f"truncated {st.truncated:,}  committed records {st.committed:,}")
        t.add_row("speed", f"{req_s:,.1f} req/s  {tok_s:,.0f} tok/s  in flight {st.in_flight}")
        t.add_row("spend", f"${st.spend:,.4f}" if st.priced else "unpriced model")
        t.add_row("ETA", _eta(st))
        t.add_row("failed attempts", st.failed_attempts())
        if st.endpoints_down:
            t.add_row("skipping", ", ".join(st.endpoints_down))
        if st.waiting:
            t.add_row("waiting", st.waiting)
        return t


class Progress:
    """``start(stats)`` / ``stop()`` around a generation."""

    def __init__(self, quiet: bool = False, console: Console | None = None,
                 title: str = "curator generate", interval: float = 30.0) -> None:
        self.quiet = quiet
        self.console = console or Console(stderr=True)
        self.title = title
        self.interval = interval
        self._live: Live | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def start(self, st: Stats) -> None:
        self.st = st
        if self.quiet or not self.console.is_terminal:
            self._thread = threading.Thread(target=self._log_loop, daemon=True)
            self._thread.start()
        else:
            self._live = Live(_View(st, self.title), console=self.console,
                              refresh_per_second=4, transient=False)
            self._live.start()

    def _log_loop(self) -> None:
        last, waiting = time.monotonic(), None
        while not self._stop.wait(min(1.0, self.interval)):
            # every interval, and at once when commits start waiting for the warehouse
            now = time.monotonic()
            if now - last >= self.interval or (self.st.waiting and not waiting):
                last = now
                print(f"[{time.strftime('%H:%M:%S')}] {summary_line(self.st)}",
                      file=sys.stderr, flush=True)
            waiting = self.st.waiting

    def stop(self) -> None:
        self._stop.set()
        if self._live is not None:
            self._live.stop()
            self._live = None
        if self._thread is not None:
            self._thread.join(1)
            self._thread = None
