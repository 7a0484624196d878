"""The `curator` command line. Commands only parse options and call library functions.

Commands of other modules register themselves through ``register(app)`` functions, listed
at the bottom of this file; they import heavy dependencies inside the command body so
that `curator --help` stays fast.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from curator.errors import CuratorError
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

# Piped output (files, CI logs, the README's examples) gets a wide console instead of
# rich's 80-column default, so ids are not folded over several lines.
console = Console(width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 200)

DbOption = Annotated[Optional[Path], typer.Option(
    "--db", help="Warehouse file (default: $CURATOR_DB or warehouse/curator.duckdb).",
    envvar="CURATOR_DB", show_default=False)]
FormatOption = Annotated[Format, typer.Option("--format", "-f", help="Output format.")]


def warehouse(db: Path | None):
    from curator.warehouse import Warehouse
    return Warehouse(db)


@app.command()
def init(db: DbOption = None) -> None:
    """Create the warehouse (idempotent) and bring its schema up to date."""
    wh = warehouse(db)
    created = wh.init()
    console.print(f"{'created' if created else 'up to date'}: {wh.path}")


@app.command()
def load(
    fmt: Annotated[str, typer.Argument(
        metavar="FORMAT", help="math | gsm8k | svamp | asdiv | multiarith | jsonl | parquet")],
    path: Annotated[Path, typer.Argument(help="File or directory to load.")],
    split: Annotated[Optional[str], typer.Option(help="Split name (default: from the path or 'train').")] = None,
    dataset: Annotated[Optional[str], typer.Option(help="Dataset name (default: the format, e.g. 'gsm8k'; for jsonl/parquet the file name up to its first dot, e.g. 'mydata' for mydata.test.jsonl).")] = None,
    subset: Annotated[Optional[str], typer.Option(help="asdiv: 'asdiv-a' keeps the ids listed in nfolds/asdiv-a.")] = None,
    question_field: Annotated[str, typer.Option(help="jsonl/parquet: field holding the question.")] = "question",
    answer_field: Annotated[str, typer.Option(help="jsonl/parquet: field holding the reference final answer.")] = "answer",
    solution_field: Annotated[Optional[str], typer.Option(help="jsonl/parquet: field with a worked solution (answer taken from its last \\boxed{} when --answer-field is absent).")] = None,
    id_field: Annotated[Optional[str], typer.Option(help="jsonl/parquet: field with a stable record id (default: the line/row number).")] = None,
    subject_field: Annotated[Optional[str], typer.Option(help="jsonl/parquet: field with the subject.")] = None,
    level_field: Annotated[Optional[str], typer.Option(help="jsonl/parquet: field with the level.")] = None,
    skip_invalid: Annotated[bool, typer.Option("--skip-invalid", help="Load the valid records and write the rejected ones, with reasons, to a rejects file.")] = False,
    rejects: Annotated[Optional[Path], typer.Option(help="Where --skip-invalid writes rejected records (default: next to the warehouse).")] = None,
    db: DbOption = None,
) -> None:
    """Load a problem set into the `problems` table (re-loading adds nothing)."""
    from curator.sources import FieldMap, load_problems

    fields = FieldMap(question=question_field, answer=answer_field, solution=solution_field,
                      id=id_field, subject=subject_field, level=level_field)
    report = load_problems(warehouse(db), fmt, path, split=split, dataset=dataset,
                           subset=subset, fields=fields, skip_invalid=skip_invalid,
                           rejects_path=rejects)
    render(["dataset", "split", "read", "added", "already present"], report.rows(), Format.table,
           console, title=f"load {fmt} {path}")
    if report.rejected:
        console.print(f"[yellow]{report.rejected} invalid record(s) skipped; reasons in "
                      f"{report.rejects_path}[/yellow]")


@app.command("import")
def import_(
    fmt: Annotated[str, typer.Argument(metavar="FORMAT", help="tdg | jsonl")],
    path: Annotated[Path, typer.Argument(help="File to import (.gz is read transparently).")],
    model: Annotated[Optional[str], typer.Option(help="Teacher model that wrote the rationales (required for tdg; jsonl may carry a 'model' field).")] = None,
    dataset: Annotated[str, typer.Option(help="Rationales are linked to matching problems of any dataset; when a question matches in several, this dataset is preferred. Problems the import has to create go under it (unless the record names its own 'dataset').")] = "math",
    split: Annotated[str, typer.Option(help="Split preferred when linking, like --dataset, and the split of problems the import has to create.")] = "train",
    provider: Annotated[Optional[str], typer.Option(help="Provider to record for the run.")] = None,
    skip_invalid: Annotated[bool, typer.Option("--skip-invalid", help="Import the valid records and write the rejected ones to a rejects file.")] = False,
    rejects: Annotated[Optional[Path], typer.Option(help="Where --skip-invalid writes rejected records.")] = None,
    db: DbOption = None,
) -> None:
    """Import existing rationales as a run, linked to loaded problems by question text."""
    from curator.imports import import_samples

    rep = import_samples(warehouse(db), fmt, path, model=model, dataset=dataset, split=split,
                         provider=provider, skip_invalid=skip_invalid, rejects_path=rejects)
    render(["run_id", "model", "records", "linked", "problems created", "samples added",
            "already present"], [rep.row()], Format.table, console, title=f"import {fmt} {path}")
    if rep.rejected:
        console.print(f"[yellow]{rep.rejected} invalid record(s) skipped; reasons in "
                      f"{rep.rejects_path}[/yellow]")


@app.command()
def sql(
    query: Annotated[str, typer.Argument(help="SQL to run against the warehouse.")],
    fmt: FormatOption = Format.table,
    write: Annotated[bool, typer.Option("--write", help="Allow statements that modify the warehouse, write files or change settings.")] = False,
    file: Annotated[Optional[list[str]], typer.Option("--file", metavar="NAME=PATH", help="Copy a Parquet, JSON(L) or CSV file into a temporary table NAME first (repeatable), to join with it.")] = None,
    db: DbOption = None,
) -> None:
    """Run SQL against the warehouse. Without --write it can read the warehouse (and the
    --file tables) and nothing else: no statement can write a file or change a setting
    (see docs/sql.md)."""
    from curator.query import parse_file_tables, run_sql

    columns, rows = run_sql(warehouse(db), query, write=write,
                            files=parse_file_tables(file or []))
    if columns:
        render(columns, rows, fmt, console)


@app.command()
def stats(fmt: FormatOption = Format.table, db: DbOption = None) -> None:
    """Problems per dataset/split/subject/level, and per run: samples, errors, tokens,
    cost, positives and negatives."""
    from curator.query import warehouse_stats

    st = warehouse_stats(warehouse(db))
    if fmt is Format.json:
        import json
        console.file.write(json.dumps(st.as_json(), indent=2, default=str) + "\n")
        return
    for title, (cols, rows) in st.tables().items():
        render(cols, rows, fmt, console, title=title)


# -- commands of other modules ---------------------------------------------------------
# (each module exposes register(app); keep this list in pipeline order)
# registered-commands-begin
from curator.teachers import cli as _teachers; _teachers.register(app)  # noqa: E402
from curator.grading import cli as _grading; _grading.register(app)  # noqa: E402
from curator.exporting import cli as _exporting; _exporting.register(app)  # noqa: E402
# registered-commands-end


def main() -> None:
    try:
        app()
    except CuratorError as exc:
        err_console.print(f"[bold red]error:[/bold red] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("interrupted; everything committed so far is kept")
        sys.exit(130)


if __name__ == "__main__":
    main()
