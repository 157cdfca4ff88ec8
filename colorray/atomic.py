"""Write files so that a reader never sees half of one: a fresh temp file in the same folder,
flushed to disk, then renamed over the target (`os.replace` is atomic on POSIX and Windows)."""

from __future__ import annotations

import io
import json
import os
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


def torch_save_atomic(obj, path: str | Path) -> None:
    """torch.save to a temporary name, then rename."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    write_bytes_atomic(path, buf.getvalue())
