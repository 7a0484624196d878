"""CLI commands of the grader: `curator grade` (the warehouse's ungraded samples) and
`curator check` (one verdict explained, or a file of pairs)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from typer.core import TyperCommand

from curator.errors import CuratorError, InputError
from curator.output import Format, render

DbOption = Annotated[Optional[Path], typer.Option(
    "--db", help="Warehouse file (default: $CURATOR_DB or warehouse/curator.duckdb).",
    envvar="CURATOR_DB", show_default=False)]

REFERENCE_FIELDS = ("reference_answer", "reference", "gold", "answer")
COMPLETION_FIELDS = ("completion", "rationale", "pred", "prediction", "response")


def _console():
    from curator.cli import console
    return console


def grade(
    run: Annotated[Optional[list[str]], typer.Option("--run", help="Grade only this run (repeatable; default: every run).")] = None,
    workers: Annotated[Optional[int], typer.Option(help="Worker processes for the comparisons that need sympy (default: one per core).")] = None,
    timeout: Annotated[float, typer.Option(help="Hard wall-clock limit per comparison, in seconds; past it the verdict is 'timeout'.")] = 5.0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    db: DbOption = None,
) -> None:
    """Grade every sample the current grader has not graded yet into positives and
    negatives.

    Interrupting keeps every verdict committed so far; the next run grades the rest. A
    newer grader version regrades everything, and the `positives`/`negatives` views
    always show the newest version's verdicts.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from curator.grading.batch import count_pending, grade_pending
    from curator.warehouse import Warehouse

    if timeout <= 0:
        raise CuratorError("--timeout must be positive")
    if workers is not None and workers < 1:
        raise CuratorError("--workers must be at least 1")
    wh = Warehouse(db)
    console = _console()
    total = count_pending(wh, run)
    if quiet or total == 0:
        rep = grade_pending(wh, run_ids=run, workers=workers, timeout=timeout)
    else:
        with Progress(TextColumn("grading"), BarColumn(), MofNCompleteColumn(),
                      TimeRemainingColumn(), console=console, transient=True) as bar:
            task = bar.add_task("grade", total=total)
            rep = grade_pending(wh, run_ids=run, workers=workers, timeout=timeout,
                                progress=lambda n: bar.advance(task, n))
    rate = rep.graded / rep.seconds if rep.seconds > 0 else 0.0
    console.print(f"graded {rep.graded:,} samples in {rep.seconds:.1f}s ({rate:,.0f}/s) with "
                  f"{rep.grader_version}: {rep.positives:,} positive, {rep.negatives:,} negative; "
                  f"{rep.pairs:,} distinct answer pairs, {rep.sympy_pairs:,} needed sympy")
    if rep.rows():
        render(["status", "samples"], rep.rows(), Format.table, console)
    if rep.skipped_no_reference:
        console.print(f"[yellow]{rep.skipped_no_reference:,} sample(s) skipped: their problem "
                      "has no reference answer[/yellow]")


def _explain(reference: str, completion: str, question: str | None, timeout: float) -> list[tuple]:
    from curator.grading import api
    g = api.grade(reference, completion, question=question, timeout=timeout)
    return [("verdict", "correct" if g.correct else "wrong"),
            ("status", g.status),
            ("rule", g.rule),
            ("extraction", g.extraction),
            ("extracted answer", g.extracted),
            ("normalized answer", g.normalized),
            ("reference", reference),
            ("normalized reference", api.normalized_form(reference))]


def _field(rec: dict, wanted: str | None, names: tuple[str, ...], what: str, path: Path, line: int):
    if wanted:
        if wanted not in rec:
            raise InputError(f"no field {wanted!r} ({what})", str(path), line)
        return rec[wanted]
    for n in names:
        if n in rec:
            return rec[n]
    raise InputError(f"no {what} field (looked for {', '.join(names)}; set it with "
                     f"--{what}-field)", str(path), line)


def read_pairs(path: Path, reference_field: str | None, completion_field: str | None,
               question_field: str | None):
    """``(line, record, reference, completion, question)`` for every line of a JSONL
    file; a bad line is an InputError with ``file:line``."""
    try:
        fh = path.open("rb")
    except OSError as exc:
        raise CuratorError(f"cannot read {path}: {exc.strerror}") from exc
    with fh:
        for line, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            try:
                rec = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError as exc:
                raise InputError(f"not UTF-8 ({exc.reason} at byte {exc.start})", str(path), line) from exc
            except json.JSONDecodeError as exc:
                raise InputError(f"bad JSON: {exc.msg} (column {exc.colno})", str(path), line) from exc
            if not isinstance(rec, dict):
                raise InputError("each line must be a JSON object", str(path), line)
            ref = _field(rec, reference_field, REFERENCE_FIELDS, "reference", path, line)
            comp = _field(rec, completion_field, COMPLETION_FIELDS, "completion", path, line)
            if not isinstance(comp, str) or (ref is not None and not isinstance(ref, (str, int, float))):
                raise InputError("reference and completion must be strings (or a number for the "
                                 "reference)", str(path), line)
            q = rec.get(question_field or "question")
            yield line, rec, None if ref is None else str(ref), comp, q if isinstance(q, str) else None


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
    fmt: Annotated[Format, typer.Option("--format", "-f", help="Output format.")] = Format.table,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="With --file: replace --out even if it is not an earlier verdicts file (never the warehouse).")] = False,
) -> None:
    """Explain one verdict: the extracted answer, both normalised forms and the rule
    that decided. With `--file`, grade a JSONL file of pairs and write the verdicts.
    """
    console = _console()
    if file is None:
        if reference is None or completion is None:
            raise CuratorError("give REFERENCE and COMPLETION, or --file F.jsonl")
        rows = _explain(reference, completion, question, timeout)
        if fmt is Format.json:
            console.file.write(json.dumps(dict(rows), ensure_ascii=False, indent=2) + "\n")
        else:
            render(["", "verdict"], rows, fmt, console)
        return
    if reference is not None or completion is not None:
        raise CuratorError("--file grades a file: give no REFERENCE/COMPLETION with it")
    _check_file(file, out, reference_field, completion_field, question_field, timeout, workers, fmt,
                overwrite)


def _check_file(file: Path, out: Path | None, reference_field, completion_field, question_field,
                timeout: float, workers: int | None, fmt: Format, overwrite: bool = False) -> None:
    from collections import Counter
    from contextlib import ExitStack

    from curator.grading.batch import grade_stream
    from curator.paths import VERDICTS, atomic_write, guard_output

    console = _console()
    pairs = list(read_pairs(file, reference_field, completion_field, question_field))
    if not pairs:
        raise InputError("no pairs in the file", str(file))
    # Default: the current directory, not beside the input (data folders are often
    # read-only or shared).
    out = out or Path(file.name + ".verdicts.jsonl")
    if out.is_dir():
        raise CuratorError(f"--out {out} is a directory; name the JSONL file to write")
    if not out.parent.is_dir():
        raise CuratorError(f"--out {out}: directory {out.parent} does not exist")
    if out.resolve() == file.resolve():
        raise CuratorError("--out must not be the input file")
    guard_output(out, VERDICTS, option="--out", overwrite=overwrite, overwrite_flag="--overwrite")
    by_line = {line: (rec, ref) for line, rec, ref, _, _ in pairs}
    grades = dict(grade_stream(((line, ref, comp, q) for line, _, ref, comp, q in pairs),
                               workers=workers, timeout=timeout))
    status: Counter = Counter()
    agree = disagree = 0
    guard_output(out, VERDICTS, option="--out", overwrite=overwrite, overwrite_flag="--overwrite")
    writing = ExitStack()
    try:
        fh = writing.enter_context(atomic_write(out))
    except OSError as e:
        raise CuratorError(f"--out {out}: cannot write there ({e.strerror or e})") from None
    with writing:
        for line, (rec, ref) in by_line.items():
            g = grades.get(line)
            verdict = ({"correct": g.correct, "status": g.status, "extracted": g.extracted,
                        "normalized": g.normalized, "rule": g.rule, "extraction": g.extraction}
                       if g is not None else
                       {"correct": None, "status": "no_reference", "extracted": None,
                        "normalized": None, "rule": "no-reference", "extraction": None})
            status[verdict["status"]] += 1
            if "expected" in rec and g is not None:
                if bool(rec["expected"]) == g.correct:
                    agree += 1
                else:
                    disagree += 1
            fh.write(json.dumps({"line": line, **rec, "verdict": verdict}, ensure_ascii=False) + "\n")
    render(["status", "pairs"], sorted(status.items(), key=lambda kv: -kv[1]), fmt, console,
           title=f"check {file.name}")
    if agree + disagree:
        console.print(f"agreement with `expected`: {agree}/{agree + disagree} "
                      f"({100 * agree / (agree + disagree):.1f}%)")
    console.print(f"verdicts written to {out}")


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
