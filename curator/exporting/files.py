"""Writing an export directory safely: staged in a temporary sibling directory and
renamed into place, so an interrupted export never leaves a half-written OUT, and an
existing OUT is replaced only when asked to and only when it is a previous export.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from curator.errors import CuratorError

MANIFEST = "manifest.json"


def check_out(out: Path, overwrite: bool) -> None:
    """Refuse an OUT we must not write to, before doing any work."""
    if out.exists() and not out.is_dir():
        raise CuratorError(f"{out} exists and is not a directory; choose another OUT")
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not overwrite:
        raise CuratorError(f"{out} is not empty; pass --overwrite to replace it, or choose "
                           "another OUT")
    if not (out / MANIFEST).is_file():
        # --overwrite deletes OUT: only ever a directory that an export wrote.
        raise CuratorError(f"{out} is not empty and holds no {MANIFEST}, so it is not a "
                           "previous export; refusing to delete it even with --overwrite")


@contextmanager
def staged_dir(out: Path, overwrite: bool) -> Iterator[Path]:
    """Yield a fresh temporary directory beside ``out``; on normal exit it replaces
    ``out`` by rename, on any exception (Ctrl-C included) it is removed."""
    out = Path(out)
    check_out(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    # mkdir (not mkdtemp, which makes it 0700) so OUT gets the user's usual permissions.
    tmp = out.parent / f".{out.name}.partial-{secrets.token_hex(6)}"
    tmp.mkdir()
    try:
        yield tmp
        _publish(tmp, out, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _publish(tmp: Path, out: Path, overwrite: bool) -> None:
    check_out(out, overwrite)  # someone may have written to OUT while we worked
    if not out.exists():
        os.replace(tmp, out)
        return
    old = out.parent / f".{out.name}.old-{secrets.token_hex(6)}"
    os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_hashes(root: Path) -> list[dict]:
    """sha256 and size of every file under ``root`` except the manifest, sorted by path."""
    out = []
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = f.relative_to(root).as_posix()
        if rel == MANIFEST:
            continue
        out.append({"path": rel, "bytes": f.stat().st_size, "sha256": sha256_file(f)})
    return out


def write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=False) + "\n")
