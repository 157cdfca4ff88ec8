"""Write files so that a reader never sees half of one: temp name in the same folder, then rename."""

from __future__ import annotations

import json
import os
from pathlib import Path


def write_text_atomic(path: str | Path, text: str) -> None:
    write_bytes_atomic(path, text.encode())


def write_json_atomic(path: str | Path, obj, **kwargs) -> None:
    write_text_atomic(path, json.dumps(obj, indent=1, **kwargs) + "\n")


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def torch_save_atomic(obj, path: str | Path) -> None:
    """torch.save to a temporary name, then rename."""
    import io

    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    write_bytes_atomic(path, buf.getvalue())
