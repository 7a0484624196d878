"""Writing an export directory safely: staged in a temporary sibling directory and
renamed into place, so an interrupted export never leaves a half-written OUT, and an
existing OUT is replaced only when asked to and only when it verifiably is a previous
export (its manifest is this tool's and it holds exactly the files the manifest lists,
unchanged).

The staging directory is ``.OUT.partial-<pid>-<random>``; the process holds an
exclusive ``flock`` on it while it works. A process killed outright (SIGKILL, power
loss) cannot remove it, so every export first removes the staging directories (and
``.OUT.old-*`` directories of a replacement cut short) beside OUT whose process is gone:
its pid is not alive and nobody holds its lock.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import secrets
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from curator.durable import sha256_file  # noqa: F401  (files.sha256_file: exports and tests use it)
from curator.errors import CuratorError, is_interrupt
from curator.paths import OutputKind, guard_output

MANIFEST = "manifest.json"
_STAGING = re.compile(r"\.(?P<name>.+)\.(?:partial|old)-(?P<pid>\d+)-[0-9a-f]{12}$")


def _export_foreign(out: Path) -> str | None:
    """None if ``out`` is an export of this tool and holds nothing else, else why not."""
    try:
        manifest = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return f"it holds no {MANIFEST}"
    except (OSError, ValueError, UnicodeDecodeError):
        return f"its {MANIFEST} is not JSON"
    if not isinstance(manifest, dict) or manifest.get("tool") != "dust-curator" \
            or manifest.get("kind") not in ("training", "eval") \
            or not isinstance(manifest.get("files"), list):
        return f"its {MANIFEST} is not a dust-curator export manifest"
    listed: dict[str, dict] = {}
    for f in manifest["files"]:
        if not isinstance(f, dict) or not isinstance(f.get("path"), str):
            return f"its {MANIFEST} lists files in an unknown form"
        listed[f["path"]] = f
    for root, dirs, names in os.walk(out):
        for d in dirs:
            if os.path.islink(os.path.join(root, d)):
                return f"{Path(root, d).relative_to(out)} is a symbolic link"
        for n in names:
            full = Path(root, n)
            rel = full.relative_to(out).as_posix()
            if rel == MANIFEST:
                continue
            f = listed.pop(rel, None)
            if f is None or full.is_symlink():
                return f"{rel} is not a file the export wrote"
            if full.stat().st_size != f.get("bytes") or sha256_file(full) != f.get("sha256"):
                return f"{rel} was changed after the export wrote it"
    if listed:
        return f"{next(iter(listed))}, listed in its {MANIFEST}, is missing"
    return None


EXPORT = OutputKind("export", "curator export", _export_foreign, directory=True)


def check_out(out: Path, overwrite: bool, warehouse: Path | None = None) -> None:
    """Refuse an OUT we must not write to, before doing any work."""
    guard_output(out, EXPORT, option="", overwrite=overwrite, overwrite_flag="--overwrite",
                 warehouse=warehouse)


def _lock(path: Path) -> int:
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale(out: Path) -> list[Path]:
    """Remove the staging directories that exports to ``out`` left when they were killed
    (their process is gone and nobody holds their lock); returns those removed."""
    removed = []
    try:
        entries = list(os.scandir(out.parent))
    except FileNotFoundError:
        return removed
    for e in entries:
        m = _STAGING.match(e.name)
        if not m or m.group("name") != out.name or not e.is_dir(follow_symlinks=False):
            continue
        if int(m.group("pid")) == os.getpid() or _pid_alive(int(m.group("pid"))):
            continue
        try:
            fd = _lock(Path(e.path))
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                continue  # its owner lives (on another host, or in another pid namespace)
            raise
        try:
            shutil.rmtree(e.path)
        finally:
            os.close(fd)
        removed.append(Path(e.path))
    return removed


def _announce_cleaned(removed: list[Path]) -> None:
    for p in removed:
        print(f"removed {p}: the staging directory of an export that was killed",
              file=sys.stderr)


@contextmanager
def staged_dir(out: Path, overwrite: bool, warehouse: Path | None = None) -> Iterator[Path]:
    """Yield a fresh temporary directory beside ``out``; on normal exit it replaces
    ``out`` by rename, on any exception it is removed. Ctrl-C, also when DuckDB turns it
    into a query error, leaves as KeyboardInterrupt."""
    out = Path(out)
    check_out(out, overwrite, warehouse)
    out.parent.mkdir(parents=True, exist_ok=True)
    _announce_cleaned(clean_stale(out))
    # mkdir (not mkdtemp, which makes it 0700) so OUT gets the user's usual permissions.
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}-{secrets.token_hex(6)}"
    tmp.mkdir()
    fd = _lock(tmp)
    try:
        yield tmp
        _publish(tmp, out, overwrite, warehouse)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if is_interrupt(exc) and not isinstance(exc, KeyboardInterrupt):
            raise KeyboardInterrupt from None
        raise
    finally:
        os.close(fd)


def _publish(tmp: Path, out: Path, overwrite: bool, warehouse: Path | None) -> None:
    check_out(out, overwrite, warehouse)  # someone may have written to OUT while we worked
    if not out.exists():
        os.replace(tmp, out)
        return
    old = out.parent / f".{out.name}.old-{os.getpid()}-{secrets.token_hex(6)}"
    fd = _lock(out)  # a kill from here on leaves .old-* to the next export's clean-up
    try:
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        os.close(fd)


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
