"""CLI commands of the grader: `curator grade` (the warehouse's ungraded samples) and
`curator check` (one verdict explained, or a file of pairs). The work is done by
:mod:`curator.grading.batch` and :mod:`curator.grading.files`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from typer.core import TyperCommand

from curator.cli_common import (DbOption, ReportFormat, ReportFormatOption, TableFormatOption,
                                console, emit_json, err_console, note, open_warehouse,
                                wrote_to)
from curator.errors import CuratorError, is_interrupt
from curator.output import Format, render


def _grade_json(rep, wh) -> dict:
    return {"warehouse": str(wh.path.resolve()), "grader_version": rep.grader_version,
            "graded": rep.graded, "positives": rep.positives, "negatives": rep.negatives,
            "status": dict(rep.rows()), "seconds": round(rep.seconds, 3),
            "pairs": rep.pairs, "sympy_pairs": rep.sympy_pairs,
            "skipped_no_reference": rep.skipped_no_reference}


def grade(
    run: Annotated[Optional[list[str]], typer.Option("--run", help="Grade only this run: a run id or a teacher model name (all of its runs); repeatable; default: every run. A name no run has is refused.")] = None,
    workers: Annotated[Optional[int], typer.Option(help="Worker processes for the comparisons that need sympy (default: one per core).")] = None,
    timeout: Annotated[float, typer.Option(help="Hard wall-clock limit per comparison, in seconds; past it the verdict is 'timeout'.")] = 5.0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    fmt: ReportFormatOption = ReportFormat.table,
    db: DbOption = None,
) -> None:
    """Grade every sample the current grader has not graded yet into positives and
    negatives.

    Interrupting keeps every verdict committed so far (and says how many); the next run
    grades the rest. A newer grader version regrades everything, and the
    `positives`/`negatives` views always show the newest version's verdicts.
    """
    wh = None
    total: int | None = None
    kept = 0

    def committed(n: int) -> None:
        nonlocal kept
        kept += n

    # The whole command, from its first import on: Ctrl-C at any moment (also one that
    # stops a DuckDB query, which DuckDB reports as its own error) ends in the one message.
    try:
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn)

        from curator.grading.batch import check_grade_options, count_pending, grade_pending
        from curator.warehouse import resolve_runs

        check_grade_options(timeout, workers)
        wh = open_warehouse(db)
        with wh.read() as con:
            run_ids = resolve_runs(con, run, option="--run")
        total = count_pending(wh, run_ids)
        if quiet or total == 0:
            rep = grade_pending(wh, run_ids=run_ids, workers=workers, timeout=timeout,
                                progress=committed)
        else:
            # Counts and rate only: the comparisons that need sympy come last and can take
            # far longer each than the rest, so no time-remaining estimate would hold.
            with Progress(TextColumn("grading"), BarColumn(), MofNCompleteColumn(),
                          TextColumn("{task.fields[rate]}"), TimeElapsedColumn(),
                          console=err_console, transient=True) as bar:
                task = bar.add_task("grade", total=total, rate="")

                def advance(n: int) -> None:
                    committed(n)
                    speed = bar.tasks[0].speed
                    bar.update(task, advance=n, rate=f"{speed:,.0f}/s" if speed else "")
                rep = grade_pending(wh, run_ids=run_ids, workers=workers, timeout=timeout,
                                    progress=advance)
    except (KeyboardInterrupt, Exception) as exc:
        # A user error stays one, also when it came while an interrupt was handled (the
        # last commit found the warehouse locked): it says what could not be written.
        if isinstance(exc, CuratorError) or not is_interrupt(exc):
            raise
        left = (f"{max(total - kept, 0):,} sample(s) still to grade" if total is not None
                else "the rest are still to grade")
        where = f" (warehouse: {wh.path.resolve()})" if wh is not None else ""
        note(f"interrupted: {kept:,} verdict(s) were committed and are kept; {left}. "
             f"Re-run `curator grade` to grade the rest.{where}", style="yellow")
        raise typer.Exit(130) from None
    if fmt is ReportFormat.json:
        emit_json(_grade_json(rep, wh))
    else:
        rate = rep.graded / rep.seconds if rep.seconds > 0 else 0.0
        console.print(f"graded {rep.graded:,} samples in {rep.seconds:.1f}s ({rate:,.0f}/s) "
                      f"with {rep.grader_version}: {rep.positives:,} positive, "
                      f"{rep.negatives:,} negative; {rep.pairs:,} distinct answer pairs, "
                      f"{rep.sympy_pairs:,} needed sympy", highlight=False, soft_wrap=True)
        if rep.rows():
            render(["status", "samples"], rep.rows(), Format.table, console)
    if rep.skipped_no_reference:
        note(f"{rep.skipped_no_reference:,} sample(s) skipped: their problem has no reference "
             "answer", style="yellow")
    if rep.graded:
        wrote_to(wh)


def check(
    reference: Annotated[Optional[str], typer.Argument(help="The reference final answer (as `problems.reference_answer` holds it).")] = None,
    completion: Annotated[Optional[str], typer.Argument(help="A rationale, or a bare answer.")] = None,
    question: Annotated[Optional[str], typer.Option(help="The question: lets a rounded decimal count when it asks for rounding.")] = None,
    file: Annotated[Optional[Path], typer.Option("--file", help="JSONL of pairs to grade instead (fields: reference/gold/answer and completion/pred/response; an `expected` field, 0/1, is compared with the verdict).")] = None,
    out: Annotated[Optional[Path], typer.Option(help="With --file: where to write one verdict per line (default: ./FILE-NAME.verdicts.jsonl, in the current directory).")] = None,
    reference_field: Annotated[Optional[str], typer.Option(help="With --file: the reference field's name.")] = None,
    completion_field: Annotated[Optional[str], typer.Option(help="With --file: the completion field's name.")] = None,
    question_field: Annotated[Optional[str], typer.Option(help="With --file: the question field's name.")] = None,
    timeout: Annotated[float, typer.Option(help="Hard wall-clock limit per comparison, in seconds.")] = 5.0,
    workers: Annotated[Optional[int], typer.Option(help="With --file: worker processes (default: one per core).")] = None,
    fmt: TableFormatOption = Format.table,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="With --file: replace --out even if it is not an earlier verdicts file (never the warehouse).")] = False,
) -> None:
    """Explain one verdict: the extracted answer, both normalised forms and the rule
    that decided. With `--file`, grade a JSONL file of pairs and write the verdicts.
    """
    from curator.grading.files import check_file, explain

    if file is None:
        if reference is None or completion is None:
            raise CuratorError("give REFERENCE and COMPLETION, or --file F.jsonl")
        rows = explain(reference, completion, question, timeout)
        if fmt is Format.json:
            emit_json(dict(rows))
        else:
            render(["", "verdict"], rows, fmt, console)
        return
    if reference is not None or completion is not None:
        raise CuratorError("--file grades a file: give no REFERENCE/COMPLETION with it")
    rep = check_file(file, out, reference_field=reference_field,
                     completion_field=completion_field, question_field=question_field,
                     timeout=timeout, workers=workers, overwrite=overwrite)
    if fmt is Format.json:
        emit_json(rep.as_json())
    else:
        render(["status", "pairs"], rep.rows(), fmt, console, title=f"check {file.name}")
    if rep.agree + rep.disagree:
        note(f"agreement with `expected`: {rep.agree}/{rep.agree + rep.disagree} "
             f"({100 * rep.agree / (rep.agree + rep.disagree):.1f}%)")
    note(f"verdicts written to {rep.out}")


class _CheckCommand(TyperCommand):
    """`check` takes answers as arguments, and answers can start with '-' (`-3`,
    `-\\frac{1}{2}`, `-x`). Click would take those for options; this treats any
    `-...` token that is not one of the command's options (or an option's value) as a
    positional argument, keeping the arguments' order."""

    def parse_args(self, ctx, args):
        takes_value: set[str] = set()
        names: set[str] = set()
        for p in self.get_params(ctx):
            # typer vendors its own click: tell options by duck type, not by class
            if getattr(p, "param_type_name", None) == "option":
                for o in (*p.opts, *p.secondary_opts):
                    names.add(o)
                    if not p.is_flag and not getattr(p, "count", False):
                        takes_value.add(o)
        short = {o[1] for o in names if len(o) == 2 and o[0] == "-" and o[1] != "-"}
        options: list[str] = []
        positional: list[str] = []
        it = iter(args)
        for tok in it:
            if tok == "--":
                positional.extend(it)
                break
            if tok.startswith("--") or (len(tok) > 1 and tok[0] == "-" and tok[1] in short):
                options.append(tok)
                if tok in takes_value:
                    nxt = next(it, None)
                    if nxt is not None:
                        options.append(nxt)
            else:
                positional.append(tok)
        return super().parse_args(ctx, options + (["--", *positional] if positional else []))


def register(app: typer.Typer) -> None:
    app.command()(grade)
    app.command(cls=_CheckCommand)(check)
