import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
TINY_IMAGENET_MINI = SHARED / "datasets" / "tiny-imagenet-200-mini.zip"
TINY_IMAGENET_MINI_SHA256 = "406d1bb1595f75faf8c9eaf34fdbf7c719035c6b522d7a27e773fdcb60f98efd"

os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

needs_tiny_imagenet = pytest.mark.skipif(
    not TINY_IMAGENET_MINI.exists(),
    reason=f"needs {TINY_IMAGENET_MINI} (the shared Tiny-ImageNet mini set, present in CI only)",
)


@pytest.fixture(scope="session")
def skimage_shards(tmp_path_factory):
    """The embedded default dataset, fetched and sharded once per test session."""
    from colorray.config import DataParams
    from colorray.data.shards import write_shards
    from colorray.data.sources import fetch_source

    root = tmp_path_factory.mktemp("skimage")
    cfg = DataParams()
    fetch_source(cfg, root / "raw", root / "downloads")
    write_shards(cfg, root / "raw", root / "shards", progress=False)
    return root / "shards"
