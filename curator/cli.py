"""The `curator` command line. Commands only parse options and call library functions.

Every command is a module-level function that can be imported and called: the core ones
(init, load, import, sql, stats) are here, the others in ``curator.teachers.cli``,
``curator.grading.cli`` and ``curator.exporting.cli``, which each expose ``register(app)``.
Options, consoles and warehouse opening shared by all of them live in
:mod:`curator.cli_common` (conventions: docs/cli.md). Heavy dependencies are imported
inside the command bodies so that `curator --help` stays fast.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from curator.cli_common import (DbOption, ReportFormat, ReportFormatOption, TableFormatOption,
                                console, emit_json, err_console, note, open_warehouse, warn,
                                wrote_to)
from curator.errors import CuratorError, run_cli
from curator.output import Format, render

app = typer.Typer(
    name="curator",
    help="Curate teacher chain-of-thought data in an embedded DuckDB warehouse: load "
         "problems, sample or import rationales, grade them into positives and negatives, "
         "query failures with SQL, export training splits.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    # markdown re-flows docstring paragraphs instead of keeping their line breaks
    rich_markup_mode="markdown",
)

def init(db: DbOption = None, fmt: ReportFormatOption = ReportFormat.table) -> None:
    """Create the warehouse (idempotent) and bring its schema up to date."""
    from curator.warehouse import Warehouse

    wh = Warehouse(db)
    created = wh.init()
    if fmt is ReportFormat.json:
        emit_json({"warehouse": str(wh.path.resolve()), "created": created})
    else:
        console.print(f"{'created' if created else 'up to date'}: {wh.path}", highlight=False,
                      soft_wrap=True)


def load(
    fmt: Annotated[str, typer.Argument(
        metavar="FORMAT", help="math | gsm8k | svamp | asdiv | multiarith | jsonl | parquet | synthetic")],
    path: Annotated[Optional[Path], typer.Argument(help="File or directory to load (none for synthetic).")] = None,
    split: Annotated[Optional[str], typer.Option(help="Split name (default: from the path or 'train'; 'test' for svamp, asdiv, multiarith). The split chosen and why is printed.")] = None,
    dataset: Annotated[Optional[str], typer.Option(help="Dataset name (default: the format, e.g. 'gsm8k'; for jsonl/parquet the file name up to its first dot, e.g. 'mydata' for mydata.test.jsonl).")] = None,
    subset: Annotated[Optional[str], typer.Option(help="asdiv: 'asdiv-a' keeps the ids listed in nfolds/asdiv-a.")] = None,
    question_field: Annotated[str, typer.Option(help="jsonl/parquet: field holding the question.")] = "question",
    answer_field: Annotated[str, typer.Option(help="jsonl/parquet: field holding the reference final answer.")] = "answer",
    solution_field: Annotated[Optional[str], typer.Option(help="jsonl/parquet: field with a worked solution (answer taken from its last \\boxed{} when --answer-field is absent).")] = None,
    id_field: Annotated[Optional[str], typer.Option(help="jsonl/parquet: field with a stable record id (default: a hash of the question, so the same question is the same problem in any file).")] = None,
    subject_field: Annotated[Optional[str], typer.Option(help="jsonl/parquet: field with the subject.")] = None,
    level_field: Annotated[Optional[str], typer.Option(help="jsonl/parquet: field with the level.")] = None,
    skip_invalid: Annotated[bool, typer.Option("--skip-invalid", help="Load the valid records and write the rejected ones, with reasons, to a rejects file.")] = False,
    rejects: Annotated[Optional[Path], typer.Option(help="Where --skip-invalid writes rejected records (default: next to the warehouse).")] = None,
    update: Annotated[bool, typer.Option("--update", help="Problems already stored whose reference answer changed in the file take the file's answer; their verdicts are deleted so that `curator grade` regrades them. Without it, changes are only listed.")] = False,
    family: Annotated[Optional[str], typer.Option(help="synthetic: problem family (subtraction | addition | subtraction4 | addition4; see docs/synthetic.md).")] = None,
    n: Annotated[Optional[int], typer.Option("--n", help="synthetic: how many problems (equal numbers per level).")] = None,
    seed: Annotated[int, typer.Option(help="synthetic: generation seed (same seed, same problems and ids).")] = 0,
    out_fmt: ReportFormatOption = ReportFormat.table,
    db: DbOption = None,
) -> None:
    """Load a problem set into the `problems` table (re-loading adds nothing; changed
    answers are reported, and applied with --update).

    `curator load synthetic --family subtraction --n 150 --split train --seed 0` generates
    problems instead of reading a file (train and test never share a problem)."""
    from curator.sources import FieldMap, load_problems

    if fmt.lower() == "synthetic":
        from curator.synthetic import load_synthetic
        if path is not None:
            raise CuratorError("load synthetic generates its problems: give no PATH, but "
                               "--family and --n")
        if family is None or n is None:
            raise CuratorError("load synthetic needs --family (subtraction | addition) and --n")
        wh = open_warehouse(db)
        report = load_synthetic(wh, family, n, seed, split or "train", dataset)
        if out_fmt is ReportFormat.json:
            emit_json({"warehouse": str(wh.path.resolve()), "format": fmt, "path": None,
                       "family": family, "seed": seed, **report.as_json()})
        else:
            render(["dataset", "split", "read", "added", "already present"], report.rows(),
                   Format.table, console, title=f"load synthetic {family} (seed {seed})")
        wrote_to(wh)
        return
    if path is None:
        raise CuratorError(f"load {fmt}: give the file or directory to load")
    if family is not None or n is not None:
        raise CuratorError("--family and --n apply to load synthetic only")
    fields = FieldMap(question=question_field, answer=answer_field, solution=solution_field,
                      id=id_field, subject=subject_field, level=level_field)
    wh = open_warehouse(db)
    report = load_problems(wh, fmt, path, split=split, dataset=dataset,
                           subset=subset, fields=fields, skip_invalid=skip_invalid,
                           rejects_path=rejects, update=update)
    for choice in report.splits:
        (warn if choice.guessed else note)(choice.describe())
    if out_fmt is ReportFormat.json:
        emit_json({"warehouse": str(wh.path.resolve()), "format": fmt, "path": str(path),
                   **report.as_json()})
    else:
        render(["dataset", "split", "read", "added", "already present"], report.rows(),
               Format.table, console, title=f"load {fmt} {path}")
    if report.changes:
        shown = report.changes[:10]
        more = f" (first {len(shown)} shown)" if len(report.changes) > len(shown) else ""
        lines = "; ".join(f"{c.label()}: {c.stored!r} -> {c.loaded!r}" for c in shown)
        if report.updated:
            note(f"updated the reference answer of {len(report.changes):,} problem(s){more}: "
                 f"{lines}. Deleted {report.verdicts_cleared:,} verdict(s) graded against the "
                 "old answers; run `curator grade` to regrade them.", style="yellow")
        else:
            warn(f"{len(report.changes):,} problem(s) already stored have another reference "
                 f"answer in this file{more}: {lines}. The stored answers were kept; re-run "
                 "with --update to replace them (their verdicts are then regraded).")
    if report.rejected:
        note(f"{report.rejected} invalid record(s) skipped; reasons in {report.rejects_path}",
             style="yellow")
    wrote_to(wh)


def import_(
    fmt: Annotated[str, typer.Argument(metavar="FORMAT", help="tdg | jsonl")],
    path: Annotated[Path, typer.Argument(help="File to import (.gz is read transparently).")],
    model: Annotated[Optional[str], typer.Option(help="Teacher model that wrote the rationales (required for tdg; jsonl may carry a 'model' field).")] = None,
    dataset: Annotated[str, typer.Option(help="Rationales are linked to matching problems of any dataset; when a question matches in several, this dataset is preferred. Problems the import has to create go under it (unless the record names its own 'dataset').")] = "math",
    split: Annotated[str, typer.Option(help="Split preferred when linking, like --dataset, and the split of problems the import has to create.")] = "train",
    provider: Annotated[Optional[str], typer.Option(help="Provider to record for the run.")] = None,
    skip_invalid: Annotated[bool, typer.Option("--skip-invalid", help="Import the valid records and write the rejected ones to a rejects file.")] = False,
    rejects: Annotated[Optional[Path], typer.Option(help="Where --skip-invalid writes rejected records.")] = None,
    out_fmt: ReportFormatOption = ReportFormat.table,
    db: DbOption = None,
) -> None:
    """Import existing rationales as a run, linked to loaded problems by question text."""
    from curator.imports import import_samples

    wh = open_warehouse(db)
    rep = import_samples(wh, fmt, path, model=model, dataset=dataset, split=split,
                         provider=provider, skip_invalid=skip_invalid, rejects_path=rejects)
    columns = ["run_id", "model", "records", "linked", "problems created", "samples added",
               "already present"]
    if out_fmt is ReportFormat.json:
        emit_json({"warehouse": str(wh.path.resolve()), "format": fmt, "path": str(path),
                   "runs": [dict(zip([c.replace(" ", "_") for c in columns], r))
                            for r in rep.rows()],
                   "rejected": rep.rejected,
                   "rejects_path": str(rep.rejects_path) if rep.rejects_path else None})
    else:
        render(columns, [rep.row()], Format.table, console, title=f"import {fmt} {path}")
    if rep.rejected:
        note(f"{rep.rejected} invalid record(s) skipped; reasons in {rep.rejects_path}",
             style="yellow")
    wrote_to(wh)


def _contract_names() -> tuple[list[str], list[str]]:
    """The warehouse's tables and views, read from the schema and view files."""
    from curator.warehouse import contract_dir

    tables: list[str] = []
    views: list[str] = []
    try:
        for f in sorted(contract_dir("migrations").glob("*.sql")):
            tables += re.findall(r"CREATE TABLE (?:IF NOT EXISTS )?(\w+)", f.read_text(), re.I)
        for f in sorted(contract_dir("views").glob("*.sql")):
            views += re.findall(r"CREATE (?:OR REPLACE )?VIEW (\w+)", f.read_text(), re.I)
    except OSError:
        pass
    return list(dict.fromkeys(tables)), list(dict.fromkeys(views))


def _sql_help() -> str:
    tables, views = _contract_names()
    return (
        "Run SQL against the warehouse. Without --write it can read the warehouse (and the "
        "--file tables) and nothing else: no statement can write a file or change a setting "
        "(see docs/sql.md).\n\n"
        "QUERY is the SQL itself, `-` to read it from stdin, or the path of a file holding it.\n\n"
        f"**Tables:** {', '.join(tables) or '(see schemas/migrations)'}.\n\n"
        f"**Views:** {', '.join(views) or '(see warehouse/views)'}.\n\n"
        "**Examples:**\n\n"
        "`curator sql \"SELECT teacher, grade_status, count(*) FROM failure_chains GROUP BY ALL "
        "ORDER BY 3 DESC\"`\n\n"
        "`curator sql - --format json < hard.sql`  (or `curator sql hard.sql`)")


def _is_file(p: Path) -> bool:
    try:
        return p.is_file()
    except OSError:  # e.g. a one-line query longer than a file name may be
        return False


def read_query(query: str) -> tuple[str, str]:
    """The SQL text of the QUERY argument and where it came from: `-` is stdin, an existing
    file is read, anything else is the SQL itself."""
    if query == "-":
        text = sys.stdin.read()
        source = "stdin"
    else:
        p = Path(query)
        looks_like_path = "\n" not in query and len(query) < 4096 and (
            query.lower().endswith(".sql") or _is_file(p))
        if not looks_like_path:
            return query, "argument"
        try:
            if p.is_dir():
                raise CuratorError(f"{query} is a directory; give a .sql file, `-` for stdin, "
                                   "or the SQL itself")
            text = p.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise CuratorError(f"no such SQL file: {query} (give the SQL itself, `-` to read "
                               "stdin, or an existing file)") from None
        except UnicodeDecodeError as exc:
            raise CuratorError(f"{query}: not UTF-8 text ({exc.reason})") from None
        except OSError as exc:
            raise CuratorError(f"cannot read {query}: {exc.strerror or exc}") from None
        source = query
    if not text.strip():
        raise CuratorError(f"no SQL in {source}")
    return text, source


def sql(
    query: Annotated[str, typer.Argument(help="SQL to run; `-` reads it from stdin; a file path reads that file.")],
    fmt: TableFormatOption = Format.table,
    write: Annotated[bool, typer.Option("--write", help="Allow statements that modify the warehouse, write files or change settings.")] = False,
    file: Annotated[Optional[list[str]], typer.Option("--file", metavar="NAME=PATH", help="Copy a Parquet, JSON(L) or CSV file into a temporary table NAME first (repeatable), to join with it.")] = None,
    db: DbOption = None,
) -> None:
    from curator.query import parse_file_tables, run_sql

    text, _ = read_query(query)
    files = parse_file_tables(file or [])
    wh = open_warehouse(db)
    columns, rows = run_sql(wh, text, write=write, files=files)
    if columns:
        render(columns, rows, fmt, console)
    elif fmt is Format.json:
        emit_json([])
    if write:
        wrote_to(wh)


sql.__doc__ = _sql_help()


STATS_TABLES = ("problems", "runs")


def stats(fmt: TableFormatOption = Format.table, db: DbOption = None,
          table: Annotated[Optional[str], typer.Option(
              "--table", help="Only this table: problems or runs (needed with --format csv, "
                              "whose output holds one table).")] = None) -> None:
    """Problems per dataset/split/subject/level, and per run: samples, errors, tokens,
    cost, positives and negatives."""
    from curator.query import warehouse_stats

    if table is not None and table not in STATS_TABLES:
        raise CuratorError(f"--table {table!r}: choose problems or runs")
    if fmt is Format.csv and table is None:
        raise CuratorError("--format csv writes one table: add --table problems or "
                           "--table runs (or use --format json for both)")
    st = warehouse_stats(open_warehouse(db))
    if fmt is Format.json:
        out = st.as_json()
        emit_json({k: v for k, v in out.items() if table is None or k in (table, "grader_version")})
        return
    for key, (title, (cols, rows)) in zip(STATS_TABLES, st.tables().items()):
        if table is None or key == table:
            render(cols, rows, fmt, console, title=title)


app.command()(init)
app.command()(load)
app.command("import")(import_)
app.command()(sql)
app.command()(stats)

# -- commands of other modules ---------------------------------------------------------
# (each module exposes register(app); keep this list in pipeline order. They import
# curator.cli_common, never this module, so there is no import circle.)
# registered-commands-begin
from curator.teachers import cli as _teachers  # noqa: E402
from curator.grading import cli as _grading  # noqa: E402
from curator.exporting import cli as _exporting  # noqa: E402

_teachers.register(app)
_grading.register(app)
_exporting.register(app)
# registered-commands-end


def main() -> None:
    run_cli(app, err_console, "interrupted; everything committed so far is kept")


if __name__ == "__main__":
    main()
