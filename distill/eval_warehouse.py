"""A student's evaluation in the warehouse: what ``distill eval`` / ``distill compare``
write through :mod:`curator.evaluations`.

The student (base model, adapter, mode, sampling settings) is a run of kind ``student``;
its sampled rationales (``samples.jsonl``) are that run's rows of ``samples``, its greedy
rationales (``greedy.jsonl``) those of a second run (the same student decoded greedily),
both graded by the teachers' grader and version, and every voting rule's result is a row
of ``evaluations`` (per eval dataset and split of the problems, with a 95% Wilson
interval). The grades the votes use and the accuracies in the report are read back from
the warehouse. Every write is idempotent: re-running an evaluation adds nothing, and an
interrupted one keeps what was stored and graded.

Which warehouse (:func:`resolve_db`): ``--db``, else ``$CURATOR_DB``, else the warehouse
recorded in the eval export's manifest, else curator's default path (used only if it
exists); ``--no-warehouse`` writes none.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from curator.errors import CuratorError

MANIFEST = "manifest.json"   # what `curator export` / `export-eval` write beside their files


@dataclass(frozen=True)
class WarehouseTarget:
    """Where and under which names an evaluation is stored. ``method``,
    ``training_config`` and ``training_export`` default to what the adapter's
    ``distill.json`` says; ``comparison_id``/``label`` place it in a comparison."""
    db: Path
    comparison_id: str | None = None
    label: str | None = None
    method: str | None = None
    training_config: dict | None = None
    training_export: Path | None = None


def _export_manifest(data: str | Path) -> dict | None:
    p = Path(data)
    path = (p if p.is_dir() else p.parent) / MANIFEST
    if not path.is_file():
        return None
    try:
        obj = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return obj if isinstance(obj, dict) else None


def resolve_db(db: str | Path | None, data: str | Path, no_warehouse: bool = False
               ) -> tuple[Path | None, str]:
    """(the warehouse to write, or None; where that choice came from)."""
    from curator.warehouse import DEFAULT_DB, ENV_DB
    if no_warehouse:
        if db:
            raise CuratorError("--db and --no-warehouse contradict each other; give one")
        return None, "--no-warehouse"
    if db:
        chosen, why = Path(db), "--db"
    elif os.environ.get(ENV_DB):
        chosen, why = Path(os.environ[ENV_DB]), f"${ENV_DB}"
    else:
        manifest = _export_manifest(data)
        recorded = (manifest or {}).get("warehouse") if (manifest or {}).get("kind") == "eval" \
            else None
        if recorded:
            chosen, why = Path(recorded), f"the warehouse recorded in {data}'s {MANIFEST}"
        elif DEFAULT_DB.is_file():
            chosen, why = DEFAULT_DB, "curator's default path"
        else:
            return None, (f"no warehouse: none given (--db, ${ENV_DB}), none recorded with "
                          f"{data}, none at {DEFAULT_DB}")
    if not chosen.is_file():
        raise CuratorError(f"warehouse {chosen} (from {why}): no such file. Give --db the "
                           f"warehouse the eval problems were exported from, or "
                           f"--no-warehouse to keep the results in the output folder only")
    return chosen, why


def adapter_digest(adapter: str | Path | None) -> str | None:
    """A hash of the adapter's weights and ``distill.json``: a student retrained in the
    same directory is another student (another run)."""
    if adapter is None:
        return None
    root = Path(adapter)
    files = sorted(f for f in root.rglob("*") if f.is_file() and
                   (f.suffix == ".safetensors" or f.name == "distill.json")
                   and "checkpoints" not in f.relative_to(root).parts)
    if not files:
        return None
    from curator.durable import sha256_file
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f.relative_to(root)}\0{sha256_file(f)}\n".encode())
    return h.hexdigest()[:20]


_ARGS = ("learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size",
         "gradient_accumulation_steps", "warmup_steps", "lr_scheduler_type", "weight_decay",
         "bf16", "fp16", "seed")


def training_config_of(adapter: str | Path | None) -> tuple[str, dict | None, Path | None]:
    """(method, training config, training export directory) from an adapter's
    ``distill.json`` and ``training_args.json`` (NAT: per stage). The config carries the
    training ``seed`` at its top level."""
    from distill.student import read_manifest
    if adapter is None:
        return "base", None, None
    manifest = {k: v for k, v in read_manifest(adapter).items() if k != "versions"}
    cfg: dict = {"manifest": manifest}
    for sub in ("", "neg", "pos"):
        p = Path(adapter) / sub / "training_args.json"
        if p.is_file():
            args = json.loads(p.read_text())
            cfg[f"args_{sub}" if sub else "args"] = {k: args.get(k) for k in _ARGS if k in args}
    seeds = [a.get("seed") for k, a in cfg.items() if k.startswith("args")]
    cfg["seed"] = seeds[0] if seeds else None
    export = None
    if manifest.get("data"):
        d = Path(manifest["data"])
        d = d if d.is_dir() else d.parent
        m = _export_manifest(d)
        if m and m.get("kind") == "training":
            export = d
    return str(manifest.get("method") or "student"), cfg, export


class StudentStore:
    """One evaluation's runs in one warehouse (see the module docstring)."""

    def __init__(self, target: WarehouseTarget, *, base, adapter, mode, name: str,
                 sampling: dict, problems: list[dict], greedy_run: bool, echo=None):
        from curator.evaluations import ensure_student_run
        from curator.warehouse import Warehouse
        self.target, self.echo = target, echo or (lambda s: None)
        self.wh = Warehouse(target.db)
        ids = [p["problem_id"] for p in problems]
        with self.wh.read() as con:
            rows = con.execute("SELECT problem_id, dataset, split FROM problems WHERE problem_id "
                               "IN (SELECT unnest(?::VARCHAR[]))", [ids]).fetchall()
        self.where = {pid: (ds, sp) for pid, ds, sp in rows}
        missing = [pid for pid in ids if pid not in self.where]
        if missing:
            raise CuratorError(
                f"{len(missing)} of the {len(ids)} eval problems are not in the warehouse "
                f"{target.db} (e.g. {', '.join(missing[:3])}): the eval set was not exported "
                f"from it. Give --db the warehouse it came from (compare: [warehouse] db), or "
                f"--no-warehouse")
        # an adapter evaluated in mode "base" is its untrained base model
        method, tcfg, export = training_config_of(adapter if mode != "base" else None)
        method = target.method or method
        tcfg = target.training_config if target.training_config is not None else tcfg
        export = target.training_export or export
        label = name.removeprefix("student:")
        digest = adapter_digest(adapter) if mode != "base" else None
        sampling = {**sampling, "adapter_digest": digest}
        kw = dict(base_model=str(base), adapter_path=adapter if mode != "base" else None,
                  method=method, training_config=tcfg, training_export=export)
        self.run = ensure_student_run(self.wh, sampling=sampling, name=label, **kw)
        self.greedy = ensure_student_run(
            self.wh, sampling={**sampling, "temperature": 0.0, "greedy": True},
            name=f"{label}:greedy", **kw) if greedy_run else None

    def store_and_grade(self, samples: dict, progress=None) -> dict[str, dict]:
        """Store the rationales, grade what is new, and return the warehouse's verdicts
        as ``{source: {(problem_id, sample_index): grade}}``."""
        from curator.evaluations import add_samples, grade_student_run, student_grades
        out = {}
        for source, run in (("samples", self.run), ("greedy", self.greedy)):
            if run is None:
                continue
            recs = [r for per in samples.get(source, {}).values() for r in per]
            added = add_samples(self.wh, run.run_id, [
                {"problem_id": r["problem_id"], "sample_index": int(r["sample_index"]),
                 "completion": r["completion"], "finish_reason": r.get("finish_reason"),
                 "prompt_tokens": r.get("prompt_tokens"),
                 "completion_tokens": r.get("completion_tokens"),
                 "metadata": {k: r[k] for k in ("logprob", "temperature") if r.get(k) is not None}
                 or None} for r in recs])
            graded = grade_student_run(self.wh, run.run_id, progress=progress)
            self.echo(f"warehouse {self.target.db}: run {run.run_id} ({run.model}): "
                      f"{added.added} rationales stored ({added.present} there already), "
                      f"{graded.graded} graded")
            got = {(g["problem_id"], g["sample_index"]): g
                   for g in student_grades(self.wh, run.run_id)}
            for r in recs:
                g = got.get((r["problem_id"], int(r["sample_index"])))
                if g is not None and g["completion"] != r["completion"]:
                    raise CuratorError(
                        f"warehouse {self.target.db}, run {run.run_id}: problem "
                        f"{r['problem_id']} sample {r['sample_index']} is stored with another "
                        f"rationale than the output folder's {source}.jsonl (this student was "
                        f"sampled before with the same settings into another folder). Evaluate "
                        f"into that folder again, or with --no-warehouse")
            out[source] = got
        return out

    def record(self, rules: list[str], rows: list[dict], meta: dict) -> list:
        """One ``evaluations`` row per rule and eval (dataset, split) of the problems;
        returns them as read back from the warehouse."""
        from curator.evaluations import read_evaluations, record_evaluations
        groups: dict[tuple[str, str], list[dict]] = {}
        for row in rows:
            groups.setdefault(self.where[row["problem_id"]], []).append(row)
        comparison = self.target.comparison_id or ""
        for (ds, sp), part in sorted(groups.items()):
            results = [{"rule": r, "n": len(part),
                        "correct": sum(x["rules"][r]["credit"] for x in part),
                        "metadata": {**meta, **({"samples_run_id": self.greedy.run_id}
                                                if r == "greedy" and self.greedy else {})}}
                       for r in rules]
            if comparison and self.target.label:
                # the comparison's row for this label is this student's (a retrained
                # student is another run; its predecessor's rows leave the comparison)
                with self.wh.write() as con:
                    con.execute("DELETE FROM evaluations WHERE comparison_id = ? AND label = ? "
                                "AND eval_dataset = ? AND eval_split = ? AND run_id <> ?",
                                [comparison, self.target.label, ds, sp, self.run.run_id])
            record_evaluations(self.wh, self.run.run_id, results, eval_dataset=ds,
                               eval_split=sp, comparison_id=comparison or None,
                               label=self.target.label)
        return [e for e in read_evaluations(self.wh, run_id=self.run.run_id)
                if e.comparison_id == comparison and e.rule in rules
                and (e.eval_dataset, e.eval_split) in groups]

    def summary(self, evaluations: list) -> dict:
        """What ``report.json`` says of the warehouse."""
        return {"db": str(self.target.db.resolve()), "run_id": self.run.run_id,
                "model": self.run.model,
                "greedy_run_id": self.greedy.run_id if self.greedy else None,
                "comparison_id": self.target.comparison_id or "", "label": self.target.label,
                "evaluations": [{"eval_dataset": e.eval_dataset, "eval_split": e.eval_split,
                                 "rule": e.rule, "n": e.n, "correct": e.correct,
                                 "accuracy": e.accuracy, "ci_low": e.ci_low,
                                 "ci_high": e.ci_high, "grader_version": e.grader_version}
                                for e in evaluations]}


__all__ = ["StudentStore", "WarehouseTarget", "adapter_digest", "resolve_db",
           "training_config_of"]
