"""Stages, their fingerprints and the resumable runner: a finished stage writes
``OUT/stages/<stage>.json`` with its fingerprint, and a later invocation skips every stage
whose marker matches (see :mod:`distill.compare`)."""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from curator.durable import sha256_file
from curator.errors import CuratorError
from distill.outputs import STAGE_STAMP

STAGES_DIR, RUNS_LOG = "stages", "runs.jsonl"


# -- fingerprints ----------------------------------------------------------------------------

_DIGESTS: dict[tuple, str] = {}


def path_identity(path: str | Path) -> dict:
    """What identifies a file's content: its SHA-256 (up to 256 MiB; beyond that, size and
    modification time); for a directory, name, size and mtime of every file (model
    weights are too large to hash on every invocation)."""
    p = Path(path)
    if p.is_file():
        st = p.stat()
        if st.st_size <= 256 << 20:
            key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
            if key not in _DIGESTS:   # several stages read the same export
                _DIGESTS[key] = sha256_file(p)
            return {"sha256": _DIGESTS[key]}
        return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file())
        return {"files": [[str(f.relative_to(p)), f.stat().st_size, f.stat().st_mtime_ns]
                          for f in files]}
    return {"missing": str(p)}


def fingerprint(params: Any) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:20]


# -- stages ----------------------------------------------------------------------------------

@dataclass
class Stage:
    name: str
    params: Callable[[], dict]             # what defines the result (evaluated when reached)
    run: Callable[[], dict | None]         # does the work; returns details for the marker
    deps: list[str] = field(default_factory=list)
    dir: Path | None = None                # its own output directory (cleared when stale)
    # What the directory's content depends on, when that is less than the fingerprint:
    # an evaluation asked for more samples keeps the ones it has (default: fingerprint).
    keep: Callable[[], dict] | None = None
    keep_deps: list[str] = field(default_factory=list)


@dataclass
class Outcome:
    stage: str
    status: str            # "ran", "skipped", "would run" (dry run), "failed"
    seconds: float
    fingerprint: str


def _marker_path(out: Path, stage: str) -> Path:
    return out / STAGES_DIR / (stage.replace(":", "__").replace("/", "_") + ".json")


def _write_json_atomic(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    os.replace(tmp, path)


def read_marker(out: Path, stage: str) -> dict | None:
    p = _marker_path(out, stage)
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError:
        return None  # a damaged marker means: not finished


def run_stages(stages: list[Stage], out: Path, redo: tuple[str, ...] = (),
               dry_run: bool = False, echo: Callable[[str], None] = print) -> list[Outcome]:
    """Run ``stages`` in order, skipping those already finished with the same fingerprint.
    ``redo`` (glob patterns such as ``eval:*``) forces stages to run again."""
    out.mkdir(parents=True, exist_ok=True)
    invocation = uuid.uuid4().hex[:12]
    run_ids: dict[str, str] = {}
    outcomes = []
    for i, st in enumerate(stages, 1):
        missing = [d for d in st.deps if d not in run_ids]
        if missing:
            raise RuntimeError(f"stage {st.name} depends on {missing}, which come later")
        fp = fingerprint({"params": st.params(), "deps": [run_ids[d] for d in st.deps]})
        marker = read_marker(out, st.name)
        forced = any(fnmatch.fnmatchcase(st.name, pat) for pat in redo)
        if marker and marker.get("fingerprint") == fp and not forced:
            run_ids[st.name] = marker["run_id"]
            outcomes.append(Outcome(st.name, "skipped", 0.0, fp))
            if not dry_run:
                _log(out, invocation, outcomes[-1])
            echo(f"[{i}/{len(stages)}] {st.name}: done already ({marker.get('seconds', 0):.1f} s "
                 f"on {marker.get('finished_at', '?')[:19]}), skipped")
            continue
        if dry_run:
            run_ids[st.name] = "would-run-" + fp
            outcomes.append(Outcome(st.name, "would run", 0.0, fp))
            echo(f"[{i}/{len(stages)}] {st.name}: would run")
            continue
        echo(f"[{i}/{len(stages)}] {st.name}: running")
        if st.dir is not None:
            keep = fp if st.keep is None else fingerprint(
                {"keep": st.keep(), "deps": [run_ids[d] for d in st.keep_deps]})
            _prepare_dir(st.dir, keep)
        start = time.perf_counter()
        try:
            info = st.run() or {}
        except BaseException:
            # recorded, then passed on: the next invocation starts again at this stage
            _log(out, invocation, Outcome(st.name, "failed", time.perf_counter() - start, fp))
            raise
        seconds = time.perf_counter() - start
        run_id = fingerprint({"fp": fp, "at": time.time_ns(), "nonce": uuid.uuid4().hex})
        _write_json_atomic(_marker_path(out, st.name), {
            "stage": st.name, "fingerprint": fp, "run_id": run_id, "seconds": round(seconds, 3),
            "finished_at": datetime.now(timezone.utc).isoformat(), "info": info})
        run_ids[st.name] = run_id
        outcomes.append(Outcome(st.name, "ran", seconds, fp))
        echo(f"[{i}/{len(stages)}] {st.name}: finished in {seconds:.1f} s")
        _log(out, invocation, outcomes[-1])
    return outcomes


def _log(out: Path, invocation: str, o: Outcome) -> None:
    with open(out / RUNS_LOG, "a", encoding="utf-8") as f:
        f.write(json.dumps({"invocation": invocation, "stage": o.stage, "status": o.status,
                            "seconds": round(o.seconds, 3), "fingerprint": o.fingerprint,
                            "at": datetime.now(timezone.utc).isoformat()}) + "\n")


STAMP = STAGE_STAMP    # what output checks take for an empty stage folder (distill.outputs)


def _prepare_dir(d: Path, fp: str) -> None:
    """A stage's directory holds the work of one fingerprint (or keep key): a directory
    left by an attempt with the same one is kept (evaluations resume from it), anything
    else of ours is cleared. A non-empty directory we did not create is refused."""
    stamp = d / STAMP
    if d.exists() and any(d.iterdir()):
        if not stamp.is_file():
            raise CuratorError(f"{d} exists and was not written by `distill compare`; move it "
                               f"away or choose another out")
        if stamp.read_text().strip() != fp:
            shutil.rmtree(d)
    d.mkdir(parents=True, exist_ok=True)
    stamp.write_text(fp)
