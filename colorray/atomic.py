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

def check_replaceable(target: str | Path, marker: str) -> None:
    """Refuse to replace `target` unless it is absent, empty, or holds colorray's `marker` file
    (a typo in --out must never delete someone's folder)."""
    target = Path(target)
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise FileExistsError(f"{target}: exists and is not a folder; refusing to replace it")
    if target.is_dir() and not (target / marker).is_file() and any(target.iterdir()):
        raise FileExistsError(f"{target}: exists and is not a colorray output (it has no {marker}); refusing "
                              "to replace it. Choose another output folder, or move it away yourself.")


def recover_dir(target: str | Path) -> None:
    """Finish a swap that was killed between its two renames: without `target`, the previous
    version (`target.old`) comes back; with it, the leftover `target.old` goes."""
    target = Path(target)
    old = target.with_name(target.name + ".old")
    if old.is_dir() and not old.is_symlink():
        if target.exists():
            shutil.rmtree(old)
        else:
            os.replace(old, target)


def replace_dir(new: str | Path, target: str | Path) -> None:
    """Put the complete folder `new` in place of `target`: target -> target.old, new -> target,
    then target.old is removed. Killed anywhere, `recover_dir(target)` leaves a whole folder."""
    new, target = Path(new), Path(target)
    old = target.with_name(target.name + ".old")
    recover_dir(target)
    if target.exists():
        os.replace(target, old)
    os.replace(new, target)
    shutil.rmtree(old, ignore_errors=True)
