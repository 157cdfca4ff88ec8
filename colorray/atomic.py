"""Write files so that a reader never sees half of one: a fresh temp file in the same folder,
flushed to disk, then renamed over the target (`os.replace` is atomic on POSIX and Windows)."""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
from pathlib import Path


def write_text_atomic(path: str | Path, text: str) -> None:
    write_bytes_atomic(path, text.encode())


def write_json_atomic(path: str | Path, obj, **kwargs) -> None:
    write_text_atomic(path, json.dumps(obj, indent=1, **kwargs) + "\n")


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """A unique temp name (mkstemp: never a planted link, no clash between concurrent writers)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def publish(tmp: str | Path, path: str | Path) -> None:
    """Put a finished temporary file (written by a streaming writer, or a resumed download) in
    place: synced to disk, then renamed to `path` in one step."""
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def torch_save_atomic(obj, path: str | Path) -> None:
    """torch.save to a temporary name, then rename."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    write_bytes_atomic(path, buf.getvalue())


# ---- folders: swapped in whole, recoverably, and only over colorray's own -----------------------
#
# Ownership is decided by a marker only colorray writes, never by a file name: every folder that
# colorray replaces or deletes (an output, its `.old` copy during a swap, its `.partial` or
# `.fetching` staging folder) holds OWNER_MARKER with OWNER_FORMAT and the kind of output. A
# folder without it is the user's: nothing in it or beside it under those names is touched.

OWNER_MARKER = ".colorray-output"
OWNER_FORMAT = "colorray-output-1"


def mark_owned(folder: str | Path, kind: str) -> None:
    """Write the marker that makes `folder` colorray's output of `kind` (e.g. "shards")."""
    write_json_atomic(Path(folder) / OWNER_MARKER, {"format": OWNER_FORMAT, "kind": kind})


def is_owned(folder: str | Path, kind: str) -> bool:
    """`folder` is a real folder (not a link) holding colorray's marker for `kind`: a regular
    small file (not a link) whose JSON names OWNER_FORMAT and `kind`."""
    folder = Path(folder)
    marker = folder / OWNER_MARKER
    if folder.is_symlink() or not folder.is_dir() or marker.is_symlink() or not marker.is_file():
        return False
    try:
        if marker.stat().st_size > 4096:
            return False
        record = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and record.get("format") == OWNER_FORMAT and record.get("kind") == kind


def _not_ours(path: Path, kind: str, what: str) -> str:
    names = sorted(p.name for p in path.iterdir())[:5] if path.is_dir() and not path.is_symlink() else []
    holds = f" (it holds {', '.join(names)}{', ...' if len(names) == 5 else ''})" if names else ""
    return (f"{path}: {what} is not a colorray {kind} folder (no {OWNER_MARKER} marker){holds}; refusing to "
            "replace or delete it. Choose another output folder, or move it away yourself.")


def check_replaceable(target: str | Path, kind: str) -> None:
    """Refuse to replace `target` unless it is absent, an empty folder, or colorray's output of
    `kind` (a typo in --out must never delete someone's folder)."""
    target = Path(target)
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise FileExistsError(f"{target}: exists and is not a folder; refusing to replace it")
    if target.is_dir() and any(target.iterdir()) and not is_owned(target, kind):
        raise FileExistsError(_not_ours(target, kind, "exists and"))


def sibling(target: str | Path, suffix: str) -> Path:
    target = Path(target)
    return target.with_name(target.name + suffix)


def _check_sibling(path: Path, kind: str) -> None:
    """A `.old`/`.partial`/`.fetching` sibling colorray may remove: absent or colorray's own."""
    if path.is_symlink() or (path.exists() and not is_owned(path, kind)):
        raise FileExistsError(_not_ours(path, kind, "beside the output,"))


def recover_dir(target: str | Path, kind: str) -> None:
    """Finish a swap that was killed between its two renames: without `target`, the previous
    version (`target.old`) comes back; with it, the leftover `target.old` goes. Only a `.old`
    that is colorray's output of `kind` is touched; any other is refused (FileExistsError)."""
    target = Path(target)
    old = sibling(target, ".old")
    if not old.exists() and not old.is_symlink():
        return
    _check_sibling(old, kind)
    if target.exists():
        shutil.rmtree(old)
    else:
        os.replace(old, target)


def staging_dir(target: str | Path, suffix: str, kind: str) -> Path:
    """A new, empty (but for the marker) staging folder `target<suffix>` for an output of `kind`,
    after checking that `target` may be replaced and finishing an interrupted swap. A leftover
    staging folder is removed only if it is colorray's."""
    target = Path(target)
    check_replaceable(target, kind)
    recover_dir(target, kind)
    stage = sibling(target, suffix)
    _check_sibling(stage, kind)
    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir(parents=True)
    mark_owned(stage, kind)
    return stage


def replace_dir(new: str | Path, target: str | Path, kind: str) -> None:
    """Put the complete folder `new` (colorray's, with its marker) in place of `target`:
    target -> target.old, new -> target, then target.old is removed. Killed anywhere,
    `recover_dir(target, kind)` leaves a whole folder."""
    new, target = Path(new), Path(target)
    if not is_owned(new, kind):
        raise ValueError(f"{new}: has no {OWNER_MARKER} marker for {kind}; not publishing it")
    check_replaceable(target, kind)
    recover_dir(target, kind)
    old = sibling(target, ".old")
    if target.exists():
        os.replace(target, old)
    os.replace(new, target)
    if old.exists():
        shutil.rmtree(old)
