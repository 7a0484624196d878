"""Reading an earlier training export's split assignment (``curator export --splits-from``).

Exports written since the keyed-hash split record their assignment in the manifest
(``split_assignment.problems``: split -> sorted problem ids). Older exports do not; for
them the assignment is read back from the data files (``<split>.jsonl``,
``<split>.parquet`` or the Hugging Face ``DatasetDict``), whose records carry
``problem_id``. Either way the result is exactly the earlier export's assignment.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from curator.errors import CuratorError
from curator.exporting import files


@dataclass(frozen=True)
class EarlierAssignment:
    path: Path                      # the manifest read
    manifest_sha256: str
    assignment: dict[str, str]      # problem_id -> split
    method: str                     # the earlier export's split method
    seed: int | None
    splits: dict[str, float]        # its requested fractions
    source: str                     # 'manifest' | 'data files'


def _manifest_path(path: Path) -> Path:
    path = Path(path)
    if path.is_dir():
        path = path / files.MANIFEST
    if not path.is_file():
        raise CuratorError(f"--splits-from: {path} does not exist; give an earlier export's "
                           f"directory or its {files.MANIFEST}")
    return path


def _ids_from_file(root: Path, fmt: str, split: str) -> list[str]:
    import polars as pl
    if fmt == "jsonl":
        f = root / f"{split}.jsonl"
        if not f.is_file():
            raise CuratorError(f"--splits-from: {f} is missing")
        if f.stat().st_size == 0:
            return []
        return pl.scan_ndjson(f).select("problem_id").collect()["problem_id"].to_list()
    if fmt == "parquet":
        f = root / f"{split}.parquet"
        if not f.is_file():
            raise CuratorError(f"--splits-from: {f} is missing")
        return pl.read_parquet(f, columns=["problem_id"])["problem_id"].to_list()
    if fmt == "hf":
        import datasets
        try:
            dd = datasets.load_from_disk(str(root))
        except (FileNotFoundError, ValueError) as exc:
            raise CuratorError(f"--splits-from: cannot read the dataset at {root}: {exc}") from exc
        if split not in dd:
            raise CuratorError(f"--splits-from: split {split!r} is missing from {root}")
        return list(dd[split]["problem_id"])
    raise CuratorError(f"--splits-from: the export at {root} has unknown format {fmt!r}")


def read_earlier_assignment(path: str | Path) -> EarlierAssignment:
    """The problem -> split assignment of the training export at ``path`` (its directory
    or its manifest.json)."""
    mpath = _manifest_path(Path(path))
    try:
        manifest = json.loads(mpath.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CuratorError(f"--splits-from: {mpath} is not a readable manifest: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("kind") != "training":
        raise CuratorError(f"--splits-from: {mpath} is not the manifest of a training export "
                           f"(kind {manifest.get('kind') if isinstance(manifest, dict) else None!r})")
    selection = manifest.get("selection") or {}
    fractions = selection.get("splits") or {}
    block = manifest.get("split_assignment") or {}
    assignment: dict[str, str] = {}
    if isinstance(block.get("problems"), dict):
        source = "manifest"
        for split, ids in block["problems"].items():
            for pid in ids:
                assignment[pid] = split
    else:
        source = "data files"
        layout = (manifest.get("layout") or {}).get("name", "default")
        if layout != "default":
            raise CuratorError(f"--splits-from: {mpath} records no split assignment and its "
                               f"data files are {layout!r} layout rows, which need not carry "
                               "problem ids; use the default-layout export of that selection")
        if not fractions:
            raise CuratorError(f"--splits-from: {mpath} names no splits")
        for split in fractions:
            for pid in _ids_from_file(mpath.parent, manifest.get("format", "jsonl"), split):
                known = assignment.setdefault(pid, split)
                if known != split:
                    raise CuratorError(f"--splits-from: problem {pid} is in both {known!r} and "
                                       f"{split!r} of {mpath.parent}; that export is not usable")
    return EarlierAssignment(
        path=mpath, manifest_sha256=files.sha256_file(mpath), assignment=assignment,
        method=block.get("method", "balanced"), seed=block.get("seed", selection.get("seed")),
        splits=dict(fractions), source=source)
