"""CLI commands `curator export`, `curator export-eval` and `curator report`.

Thin wrappers: they parse options and call :func:`curator.exporting.export_training`,
:func:`curator.exporting.export_eval` and :func:`curator.reporting.build_report`.
Heavy imports (DuckDB, datasets, matplotlib) happen inside the command bodies so that
`curator --help` stays fast.

``--format``/``-f`` is the report's format (table | json) as on every command; the data
format of the files written is ``--data-format``. ``--format jsonl|parquet|hf``, the old
spelling, still works and says so on stderr.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer

from curator.cli_common import (DbOption, ReportFormat, console, emit_json, note,
                                open_warehouse, warn, wrote_to)
from curator.errors import CuratorError

DATA_FORMATS = ("jsonl", "parquet", "hf")
DataFormatOpt = Annotated[Optional[str], typer.Option(
    "--data-format", help="Files to write: jsonl | parquet | hf.", show_default="jsonl")]
OutputFormatOpt = Annotated[str, typer.Option(
    "--format", "-f", help="table | json: the report printed (JSON goes to stdout, and nothing "
                           "else does). The old spelling --format jsonl|parquet|hf still sets "
                           "--data-format.")]
SeedOpt = Annotated[int, typer.Option(help="Seed for the split assignment and the caps.")]
OverwriteOpt = Annotated[bool, typer.Option(
    "--overwrite", help="Replace OUT if it holds a previous export.")]


def formats(fmt: str, data_format: str | None) -> tuple[ReportFormat, str]:
    """(report format, data format) from ``--format`` and ``--data-format``."""
    value = fmt.strip().lower()
    if value in DATA_FORMATS:
        if data_format is not None and data_format.lower() != value:
            raise CuratorError(f"--format {fmt} (the old spelling of --data-format) contradicts "
                               f"--data-format {data_format}")
        warn(f"--format {value} is deprecated for the files' format: use --data-format "
             f"{value} (--format now chooses table or json output)")
        return ReportFormat.table, value
    try:
        report = ReportFormat(value)
    except ValueError:
        raise CuratorError(f"--format {fmt!r}: choose table or json (the files' format is "
                           f"--data-format: {' | '.join(DATA_FORMATS)})") from None
    data = (data_format or "jsonl").lower()
    if data not in DATA_FORMATS:
        raise CuratorError(f"--data-format {data_format!r}: choose one of "
                           f"{', '.join(DATA_FORMATS)}")
    return report, data


def _csv(values: list[str] | None) -> tuple[str, ...]:
    """Repeatable options that also accept comma-separated lists."""
    out: list[str] = []
    for v in values or []:
        out += [x.strip() for x in v.split(",") if x.strip()]
    return tuple(out)


def _stratify(value: str) -> tuple[str, ...]:
    return () if value.strip().lower() in ("", "none") else _csv([value])


def _result_json(result) -> dict:
    m = result.manifest
    keys = ["split", "problems"] if m["kind"] == "eval" else \
        ["split", "problems", "records", "positives", "negatives"]
    return {"out": str(result.out), "kind": m["kind"], "data_format": m["format"],
            "manifest": str(result.out / "manifest.json"),
            "splits": [dict(zip(keys, r)) for r in result.split_rows()],
            "layout": m.get("layout"), "held_back": m.get("held_back"),
            "split_assignment": m.get("split_assignment"),
            "duplicates_dropped": m.get("duplicates_dropped", 0), "capped": m.get("capped", 0),
            "warnings": list(result.warnings)}


def _print_result(result, title: str, fmt: ReportFormat = ReportFormat.table) -> None:
    from curator.output import Format, render

    m = result.manifest
    if fmt is ReportFormat.json:
        emit_json(_result_json(result))
    elif m["kind"] == "eval":
        render(["split", "problems"], [r[:2] for r in result.split_rows()], Format.table,
               console, title=title)
    else:
        render(["split", "problems", "records", "positives", "negatives"], result.split_rows(),
               Format.table, console, title=title)
    if m.get("duplicates_dropped"):
        note(f"dropped {m['duplicates_dropped']} exact duplicate rationale(s) within problems")
    held = m.get("held_back") or {}
    if held.get("problems"):
        from curator.exporting.options import HELD_BACK_REASONS
        why = "; ".join(f"{len(ids)} {HELD_BACK_REASONS.get(reason, reason)}"
                        for reason, ids in held["reasons"].items())
        note(f"held back {held['problems']} evaluation problem(s) from the splits ({why}); "
             "ids in manifest.json held_back (--allow-eval-problems takes them)")
    for run in held.get("student_runs_left_out", []):
        note(f"left out student run {run['run_id']} ({run['model']}, "
             f"{run['graded_samples']} graded samples); name it in --runs to take it")
    assigned = m.get("split_assignment") or {}
    if assigned.get("splits_from"):
        note(f"kept the split of {assigned['reused']} problem(s) from "
             f"{assigned['splits_from']['manifest']}; placed {assigned['hashed']} new "
             "one(s) by the keyed hash")
    if m.get("capped"):
        note(f"left out {m['capped']} rationale(s) over --max-positives/--max-negatives")
    for w in result.warnings:
        warn(w)
    if m.get("layout", {}).get("trainer"):
        lay = m["layout"]
        note(f"layout {lay['name']} ({lay['style']}) for {lay['trainer']}: columns "
             f"{', '.join(lay['columns'])}; records are its rows")
    note(f"wrote {result.out} ({m['format']}); provenance in {result.out / 'manifest.json'}")


@contextmanager
def _interruptible(out: Path):
    """Ctrl-C during an export: one line and exit status 130, no traceback; the staging
    directory is already gone (files.staged_dir) and OUT is as it was."""
    try:
        yield
    except KeyboardInterrupt:
        note(f"export interrupted: {out} was not written (an existing OUT is unchanged) "
             "and no partial output is left")
        raise typer.Exit(130) from None


def export(
    out: Annotated[Path, typer.Argument(help="Output directory (must be empty or absent).")],
    runs: Annotated[Optional[list[str]], typer.Option(
        "--runs", help="Run ids or teacher model names (repeatable or comma-separated; default: all).")] = None,
    dataset: Annotated[Optional[list[str]], typer.Option(
        "--dataset", help="Dataset(s) to keep (repeatable or comma-separated; default: all).")] = None,
    where: Annotated[Optional[str], typer.Option(
        help="SQL condition over the record fields and problem_split, sample_index, "
             "grade_status, finish_reason, error_class, prompt_tokens, completion_tokens, "
             "provider; e.g. \"level >= 3\".")] = None,
    splits: Annotated[str, typer.Option(help="Split names and fractions of problems.")] =
        "train=0.9,validation=0.05,test=0.05",
    seed: SeedOpt = 0,
    split_method: Annotated[str, typer.Option(
        help="keyed-hash: a problem's split depends only on its id and --seed, so other "
             "data never moves it; balanced: exact sizes and subject/level mix, but "
             "another selection moves problems.")] = "keyed-hash",
    splits_from: Annotated[Optional[Path], typer.Option(
        help="An earlier export (directory or manifest.json) whose split assignment is "
             "kept exactly; new problems go where the keyed hash puts them.")] = None,
    stratify: Annotated[Optional[str], typer.Option(
        help="--split-method balanced: columns whose mix every split keeps: any of "
             "dataset, subject, level; or 'none' (default subject,level).",
        show_default=False)] = None,
    allow_eval_problems: Annotated[bool, typer.Option(
        "--allow-eval-problems",
        help="DANGER: also put problems of a dataset's test split, problems written by "
             "`curator export-eval` and problems with the same question as one of those "
             "into the splits (held back by default).")] = False,
    max_positives: Annotated[Optional[int], typer.Option(
        help="At most this many positives per problem (chosen by seeded hash).")] = None,
    max_negatives: Annotated[Optional[int], typer.Option(
        help="At most this many negatives per problem (chosen by seeded hash).")] = None,
    include_truncated: Annotated[bool, typer.Option(
        "--include-truncated", help="Keep rationales cut off at the token limit.")] = False,
    include_errored: Annotated[bool, typer.Option(
        "--include-errored", help="Keep samples whose request recorded an error.")] = False,
    keep_duplicates: Annotated[bool, typer.Option(
        "--keep-duplicates", help="Keep exact duplicate rationales within a problem.")] = False,
    data_format: DataFormatOpt = None,
    fmt: OutputFormatOpt = "table",
    overwrite: OverwriteOpt = False,
    db: DbOption = None,
    layout: Annotated[str, typer.Option(
        help="Rows to write: default (the export records) | sft (positives as "
             "prompt/completion, for trl.SFTTrainer) | preference (prompt/chosen/rejected "
             "pairs of one problem, trl.DPOTrainer) | unpaired (prompt/completion/label, "
             "trl.KTOTrainer). See docs/trl.md.")] = "default",
    style: Annotated[Optional[str], typer.Option(
        help="For sft/preference/unpaired: standard (text prompt; default) | "
             "conversational (prompt and completions as chat messages) | messages "
             "(sft only: one 'messages' column).")] = None,
    prompt_template: Annotated[Optional[str], typer.Option(
        help="--style standard: the prompt text with {question}; default "
             "distill's 'Question: {question}\\nAnswer: '.")] = None,
    chat_prompt: Annotated[Optional[str], typer.Option(
        help="Chat styles: put a prompt template's system and few-shot turns before the "
             "question (math-cot | math-zeroshot | word-cot | word-zeroshot, or a file "
             "as for `curator generate --prompt`); default: the question alone.")] = None,
    pairs_per_problem: Annotated[Optional[int], typer.Option(
        help="--layout preference: at most this many (positive, negative) pairs per "
             "problem, spread over its rationales by seeded hash; default: all pairs.")] = None,
) -> None:
    """Export graded rationales as leak-free problem-level training splits."""
    from curator.exporting import ExportOptions, export_training

    report_fmt, data = formats(fmt, data_format)
    opts = ExportOptions(runs=_csv(runs), datasets=_csv(dataset), where=where,
                         splits=splits, seed=seed, split_method=split_method,
                         splits_from=str(splits_from) if splits_from else None,
                         stratify=None if stratify is None else _stratify(stratify),
                         allow_eval_problems=allow_eval_problems,
                         max_positives=max_positives, max_negatives=max_negatives,
                         include_truncated=include_truncated,
                         include_errored=include_errored, dedupe=not keep_duplicates,
                         format=data, layout=layout, style=style,
                         prompt_template=prompt_template, chat_prompt=chat_prompt,
                         pairs_per_problem=pairs_per_problem)
    wh = open_warehouse(db)
    with _interruptible(out):
        result = export_training(wh, out, opts, overwrite=overwrite)
    _print_result(result, f"export {out}", report_fmt)
    wrote_to(wh)  # the export is recorded in the warehouse


def export_eval(
    out: Annotated[Path, typer.Argument(help="Output directory (must be empty or absent).")],
    dataset: Annotated[Optional[list[str]], typer.Option(
        "--dataset", help="Dataset(s) (repeatable or comma-separated; default: all).")] = None,
    split: Annotated[str, typer.Option(help="The problems' split as loaded.")] = "test",
    limit: Annotated[Optional[int], typer.Option(
        help="Keep this many problems, chosen by seed with the mix of the whole.")] = None,
    where: Annotated[Optional[str], typer.Option(
        help="SQL condition over the eval record fields, e.g. \"level = 5\".")] = None,
    seed: SeedOpt = 0,
    stratify: Annotated[str, typer.Option(
        help="Columns whose mix --limit keeps: any of dataset, subject, level; or 'none'.")] =
        "dataset,subject,level",
    data_format: DataFormatOpt = None,
    fmt: OutputFormatOpt = "table",
    overwrite: OverwriteOpt = False,
    db: DbOption = None,
) -> None:
    """Export problems (no rationales) for evaluating students."""
    from curator.exporting import EvalOptions
    from curator.exporting import export_eval as run_export_eval

    report_fmt, data = formats(fmt, data_format)
    opts = EvalOptions(datasets=_csv(dataset), split=split, where=where, limit=limit,
                       seed=seed, stratify=_stratify(stratify), format=data)
    wh = open_warehouse(db)
    with _interruptible(out):
        result = run_export_eval(wh, out, opts, overwrite=overwrite)
    _print_result(result, f"export-eval {out}", report_fmt)
    wrote_to(wh)  # the export and its problems (eval_export_problems) are recorded there


def report(
    out: Annotated[Path, typer.Argument(help="HTML file to write; PNGs go beside it.")],
    manifest: Annotated[Optional[list[Path]], typer.Option(
        "--manifest", help="Also show an export's split sizes from its manifest.json "
                           "(or directory); exports recorded in the warehouse are shown anyway.")] = None,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace OUT even if it is not an earlier report (never the warehouse).")] = False,
    fmt: Annotated[ReportFormat, typer.Option(
        "--format", "-f", help="table | json: what is printed about the report written.")] =
        ReportFormat.table,
    db: DbOption = None,
) -> None:
    """Write a self-contained HTML report with plots of the warehouse and exports."""
    from curator.reporting import build_report

    rep = build_report(open_warehouse(db), out, manifests=manifest or [], overwrite=overwrite)
    if fmt is ReportFormat.json:
        emit_json({"html": str(rep.html), "image_dir": str(rep.image_dir),
                   "images": [str(p) for p in rep.images], "notes": list(rep.notes)})
    else:
        console.print(f"wrote {rep.html} with {len(rep.images)} plot(s); PNGs in "
                      f"{rep.image_dir}", soft_wrap=True, highlight=False)
    for n in rep.notes:
        note(f"[yellow]note:[/yellow] {n}")


def register(app: typer.Typer) -> None:
    app.command("export")(export)
    app.command("export-eval")(export_eval)
    app.command("report")(report)
