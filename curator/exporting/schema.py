"""The export record contracts (``schemas/*.schema.json``) and validation on write.

The JSON Schemas are the single definition of what `curator export` and
`curator export-eval` write; the SELECT lists and Hugging Face features are derived from
them here, so a field added to the schema shows up in every format at once.

Validating 120,000 records one by one with ``jsonschema`` takes longer than writing
them. For a flat schema whose properties only constrain ``type`` and ``enum``, whether a
record is valid depends only on its *shape*: for each field, its SQL type (fixed per
column), whether it is NULL, its JSON type for JSON columns, and its value for enum
fields. So we group the rows by shape in SQL and validate one real record per shape with
``jsonschema``: exactly the same verdict as validating every record, at the cost of a
GROUP BY. A schema that uses any other keyword is validated record by record.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

import duckdb

from curator.errors import CuratorError
from curator.warehouse import contract_dir

TRAINING_SCHEMA = "export_record.schema.json"
EVAL_SCHEMA = "eval_record.schema.json"

# Property keywords the shape-based check covers exactly.
_SHAPE_KEYWORDS = {"type", "enum", "description", "title", "$comment"}
_EXACT_SQL_TYPES = ("VARCHAR", "BOOLEAN", "TINYINT", "SMALLINT", "INTEGER", "BIGINT",
                    "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT", "JSON")


@lru_cache(maxsize=None)
def _load(name: str) -> str:
    path = contract_dir("schemas") / name
    try:
        return path.read_text()
    except OSError as exc:
        raise CuratorError(f"cannot read the record schema {path}: {exc}") from exc


def load_schema(name: str) -> dict:
    return json.loads(_load(name))


def schema_text(name: str) -> str:
    """The schema file's exact text (hashed into manifests)."""
    return _load(name)


def field_names(schema: dict) -> list[str]:
    """The record's fields in schema order: the column order of every export format."""
    return list(schema["properties"])


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _shape_exact(schema: dict, column_types: dict[str, str]) -> bool:
    if set(schema) - {"$schema", "$id", "title", "description", "type", "required",
                      "properties", "additionalProperties"}:
        return False
    for name, prop in schema["properties"].items():
        if set(prop) - _SHAPE_KEYWORDS:
            return False
        if column_types.get(name, "VARCHAR").upper() not in _EXACT_SQL_TYPES:
            return False
    return True


def _records(rel: duckdb.DuckDBPyRelation) -> list[dict[str, Any]]:
    cols = rel.columns
    types = {c: str(t) for c, t in zip(rel.columns, rel.types)}
    out = []
    for row in rel.fetchall():
        rec = {}
        for c, v in zip(cols, row):
            # JSON columns come back as text: the record holds the parsed value.
            rec[c] = json.loads(v) if types[c] == "JSON" and v is not None else v
        out.append(rec)
    return out


def validate_table(con: duckdb.DuckDBPyConnection, table: str, schema_name: str,
                   id_field: str) -> int:
    """Validate every row of ``table`` (whose columns are exactly the schema's fields)
    against the named schema; raise CuratorError naming the first bad record.

    Returns the number of record shapes checked with ``jsonschema``.
    """
    import jsonschema

    schema = load_schema(schema_name)
    validator = jsonschema.validators.validator_for(schema)(schema)
    rel = con.table(table)
    column_types = {c: str(t) for c, t in zip(rel.columns, rel.types)}
    fields = field_names(schema)
    if list(rel.columns) != fields:
        raise CuratorError(f"internal: export columns {rel.columns} differ from the fields of "
                           f"{schema_name} {fields}")
    if _shape_exact(schema, column_types):
        keys = []
        for name, prop in schema["properties"].items():
            q = _quote(name)
            keys.append(f"{q} IS NULL")
            if column_types[name] == "JSON":
                keys.append(f"json_type({q})")
            if "enum" in prop:
                keys.append(f"{q}::VARCHAR")
        # One real record per shape (the one with the smallest id, so errors are
        # stable); grouping reads only the key columns, not the text.
        idq = _quote(id_field)
        reps = con.sql(f"SELECT * FROM {table} WHERE {idq} IN (SELECT min({idq}) FROM "
                       f"{table} GROUP BY {', '.join(keys)}) ORDER BY {idq}")
    else:
        reps = con.sql(f"SELECT * FROM {table} ORDER BY {_quote(id_field)}")
    records = _records(reps)
    for rec in records:
        error = jsonschema.exceptions.best_match(validator.iter_errors(rec))
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path) or "(record)"
            raise CuratorError(
                f"record {id_field}={rec.get(id_field)!r} (problem {rec.get('problem_id')}) "
                f"breaks {schema_name} at {where}: {error.message}. Nothing was written.")
    return len(records)
