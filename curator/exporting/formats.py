"""The three export formats, written from one DuckDB table so that they hold exactly the
same records, with the same fields in the same order.

* ``jsonl``: ``<split>.jsonl``, one record per line (DuckDB ``COPY ... (FORMAT json)``);
* ``parquet``: ``<split>.parquet`` (DuckDB ``COPY ... (FORMAT parquet)``);
* ``hf``: a ``datasets.DatasetDict`` saved with ``save_to_disk`` (one Arrow file per split).

Nothing time-dependent goes into a data file, so the same records give the same bytes.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import duckdb

from curator.errors import CuratorError

FORMATS = ("jsonl", "parquet", "hf")


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise CuratorError(f"unknown export format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    return fmt


def _sql_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _split_query(table: str, fields: list[str], split: str, order: list[str]) -> str:
    """One split's rows. With ``order`` empty the table's own row order is kept:
    callers create the table with ORDER BY, and a DuckDB scan with
    preserve_insertion_order (set in write_splits) returns rows in that order, which
    saves sorting all the text a second time."""
    cols = ", ".join(f'"{f}"' for f in fields)
    sql = f"SELECT {cols} FROM {table} WHERE export_split = {_sql_str(split)}"
    return sql + (f" ORDER BY {', '.join(order)}" if order else "")


def write_splits(con: duckdb.DuckDBPyConnection, table: str, fields: list[str],
                 splits: list[str], order: list[str], fmt: str, out: Path,
                 description: str, fingerprint_seed: str) -> None:
    """Write the rows of ``table`` (with an ``export_split`` column) split by split."""
    check_format(fmt)
    con.execute("SET preserve_insertion_order = true")
    if fmt in ("jsonl", "parquet"):
        opts = "FORMAT json" if fmt == "jsonl" else "FORMAT parquet"
        for split in splits:
            target = out / f"{split}.{fmt}"
            con.execute(f"COPY ({_split_query(table, fields, split, order)}) "
                        f"TO {_sql_str(str(target))} ({opts})")
            if fmt == "jsonl" and not target.exists():
                target.touch()  # an empty split is an empty file, not a missing one
        return
    _write_hf(con, table, fields, splits, order, out, description, fingerprint_seed)


def _write_hf(con, table, fields, splits, order, out: Path, description: str,
              fingerprint_seed: str) -> None:
    import datasets
    from datasets.utils import (are_progress_bars_disabled, disable_progress_bars,
                                enable_progress_bars)
    from datasets.utils import logging as ds_logging

    was_disabled = are_progress_bars_disabled()
    disable_progress_bars()
    verbosity = ds_logging.get_verbosity()
    ds_logging.set_verbosity_error()
    try:
        parts = {}
        for split in splits:
            tbl = con.sql(_split_query(table, fields, split, order)).to_arrow_table()
            # datasets otherwise stamps a random fingerprint into state.json, which
            # would make two identical exports differ.
            fp = hashlib.sha256(f"{fingerprint_seed}\x1f{split}".encode()).hexdigest()[:16]
            info = datasets.DatasetInfo(description=description)
            parts[split] = datasets.Dataset(tbl, info=info, split=datasets.NamedSplit(split),
                                            fingerprint=fp)
        datasets.DatasetDict(parts).save_to_disk(str(out))
    finally:
        ds_logging.set_verbosity(verbosity)
        if not was_disabled:
            enable_progress_bars()
