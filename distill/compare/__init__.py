"""``distill compare``: the paper's comparison table for any base model, teacher export and
budget, from one config file, resumable stage by stage.

One config (TOML, YAML or JSON) names the base model, the teacher export, the evaluation
sets (out-of-distribution sets are just more of them), the methods and the budgets. The
run is a list of *stages*: optional ``prepare`` commands (e.g. the ``curator`` calls that
build the export), the tiny model when asked for, one training stage per student (CoT KD
``sft``, ``mix``, ``nt``, ``ul``, ``cl``, ``nat``, ``nce`` on the NAT model), the ranking
model for ASC, and one evaluation per student and set. The table reads the evaluations'
reports; each method's row shows one voting rule (``[report] rule``, greedy by default),
``nat+nce+asc`` the ASC rule on the NAT+NCE student's samples.

Resuming: a finished stage writes ``OUT/stages/<stage>.json`` with its *fingerprint*, a
hash of what defines its result (its settings, its input files, and the run ids of the
stages it depends on). A later invocation skips every stage whose marker matches, reruns
the ones whose settings or inputs changed (and, through the run ids, everything
downstream of them), and continues an interrupted evaluation from the rationales already
on disk. Every invocation appends what it ran and skipped, with timings, to
``OUT/runs.jsonl``.

Seeds (``seeds = [0, 1, 2]`` or ``--seeds 0,1,2``): with more than one, every trained
student and its evaluations exist once per seed (``train:sft@s1``,
``OUT/students/sft/seed-1``), the seed-independent stages (prepare, the model, the
untrained base's evaluation, the ranker) once, and the table is the mean and 95% interval
over seeds with paired differences from CoT KD (:func:`aggregate`; docs/compare.md).

Paths in the config are relative to the current directory; ``{out}`` and ``{config_dir}``
are replaced by the output directory and the config file's directory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from distill.compare.config import (BASELINES, DEFAULT_METHODS, EVAL_KEYS, METHODS,
                                    PREFERENCE, REFERENCE, SEEDLESS, TEACHER_KEYS, TITLES,
                                    TOP_KEYS, CompareConfig, load_config, parse_seeds)
from distill.compare.plan import plan, students_needed
from distill.compare.report import markdown_aggregate, markdown_table, plot_table, write_table
from distill.compare.stages import (RUNS_LOG, STAGES_DIR, STAMP, Outcome, Stage, fingerprint,
                                    path_identity, read_marker, run_stages)
from distill.compare.stats import interval, paired, t_quantile
from distill.compare.tables import aggregate, collect, collect_seeds, table
from distill.compare.teacher import teacher_markdown, teacher_stats
from distill.knobs import training_config


@dataclass
class CompareResult:
    outcomes: list[Outcome]
    table: dict | None
    out: Path


def compare(config: str | Path, out: str | Path | None = None, redo: tuple[str, ...] = (),
            dry_run: bool = False, echo: Callable[[str], None] = print,
            seeds: str | list[int] | None = None, db: str | Path | None = None,
            no_warehouse: bool = False) -> CompareResult:
    """Run (or resume) the comparison described by ``config`` and write the table;
    ``seeds`` overrides the config's ``seeds``, ``db`` its ``[warehouse] db``, and
    ``no_warehouse`` drops its ``[warehouse]``."""
    from curator.paths import guard_output
    from distill.outputs import COMPARE_OUT

    cfg = load_config(config, out, seeds=seeds, db=db, no_warehouse=no_warehouse)
    # out: absent, empty or a comparison (never a foreign folder or a warehouse's)
    guard_output(cfg.out, COMPARE_OUT, option="out")
    stages = plan(cfg, echo)
    outcomes = run_stages(stages, cfg.out, redo=redo, dry_run=dry_run, echo=echo)
    t = None if dry_run else write_table(cfg)
    return CompareResult(outcomes, t, cfg.out)


__all__ = ["BASELINES", "DEFAULT_METHODS", "EVAL_KEYS", "METHODS", "PREFERENCE", "REFERENCE",
           "RUNS_LOG",
           "SEEDLESS", "STAGES_DIR", "STAMP", "TEACHER_KEYS", "TITLES", "TOP_KEYS",
           "CompareConfig", "CompareResult", "Outcome", "Stage", "aggregate", "collect",
           "collect_seeds", "compare", "fingerprint", "interval", "load_config",
           "markdown_aggregate", "markdown_table", "paired", "parse_seeds", "path_identity",
           "plan", "plot_table", "read_marker", "run_stages", "students_needed", "t_quantile",
           "table", "teacher_markdown", "teacher_stats", "training_config", "write_table"]
