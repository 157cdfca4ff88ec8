"""Fréchet Inception Distance with pytorch-fid: its InceptionV3 (2048-d pool features), its
Fréchet distance, and real-image statistics cached on disk under a hash of data and detector.

pytorch-fid downloads its weights on first use. Where that is impossible (no internet), put
the file at the path `fid_weights_path()` names (the torch hub cache pytorch-fid itself reads,
or `metrics.fid_weights` in params.yaml); until then FID raises `FIDUnavailable` with that
path, and callers report FID as unavailable. The extractor is injectable, so the machinery
(statistics, distance, cache) is tested with a small network; no FID value is ever made up.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Callable, Iterable
from unittest import mock

import numpy as np
import torch

from colorray.atomic import write_bytes_atomic
from colorray.config import Params

# pytorch_fid.inception.FID_WEIGHTS_URL, written out: importing pytorch_fid.inception (it loads
# torchvision) costs seconds, in every run that only reports FID as unavailable.
# tests/test_fid.py checks it against pytorch-fid's.
FID_WEIGHTS_URL = ("https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
                   "pt_inception-2015-12-05-6726825d.pth")
WEIGHTS_FILE = Path(FID_WEIGHTS_URL).name
DIMS = 2048

Extractor = Callable[[torch.Tensor], torch.Tensor]  # (N, 3, H, W) RGB in [0, 1] -> (N, D)


class FIDUnavailable(RuntimeError):
    """The Inception weights are not on disk (and cannot be downloaded here)."""


def fid_weights_path(configured: str | None = None) -> Path:
    """Where the weights are read from: `configured`, else the torch hub cache
    ($TORCH_HOME/hub/checkpoints/, ~/.cache/torch by default), where pytorch-fid saves them."""
    if configured:
        return Path(configured).expanduser()
    return Path(torch.hub.get_dir()) / "checkpoints" / WEIGHTS_FILE


def fid_available(configured: str | None = None) -> bool:
    return fid_weights_path(configured).is_file()


def unavailable_message(configured: str | None = None) -> str:
    path = fid_weights_path(configured)
    return (f"FID unavailable: the pytorch-fid Inception weights are not at {path}. Download "
            f"{FID_WEIGHTS_URL} and save it there (or set metrics.fid_weights to where it is).")


def inception_extractor(configured: str | None = None, device="cpu") -> Extractor:
    """pytorch-fid's InceptionV3 (pool3, 2048-d), weights read from `fid_weights_path()`."""
    path = fid_weights_path(configured)
    if not path.is_file():
        raise FIDUnavailable(unavailable_message(configured))
    from pytorch_fid import inception

    def from_disk(url, *args, **kwargs):  # pytorch-fid's own loader, pointed at the file
        return torch.load(path, map_location="cpu", weights_only=True)

    with mock.patch.object(inception, "load_state_dict_from_url", from_disk):
        model = inception.InceptionV3([inception.InceptionV3.BLOCK_INDEX_BY_DIM[DIMS]]).eval().to(device)

    @torch.no_grad()
    def extract(rgb: torch.Tensor) -> torch.Tensor:  # resizes to 299 and scales to [-1, 1] itself
        return model(rgb.to(device).float())[0].flatten(1)

    extract.detector_id = f"pytorch-fid-inception-v3-pool3:{WEIGHTS_FILE}"
    return extract


def activation_statistics(batches: Iterable[torch.Tensor], extractor: Extractor) -> tuple[np.ndarray, np.ndarray, int]:
    """Mean and covariance of the extractor's features over all images, and their number."""
    feats = np.concatenate([extractor(b).double().cpu().numpy() for b in batches])
    if len(feats) < 2:
        raise ValueError(f"FID needs at least 2 images (got {len(feats)})")
    return feats.mean(0), np.cov(feats, rowvar=False), len(feats)


def frechet_distance(stats_a, stats_b) -> float:
    from pytorch_fid.fid_score import calculate_frechet_distance

    return float(calculate_frechet_distance(stats_a[0], stats_a[1], stats_b[0], stats_b[1]))


def cached_statistics(key: str, cache_dir: Path, batches: Callable[[], Iterable[torch.Tensor]],
                      extractor: Extractor) -> tuple[np.ndarray, np.ndarray, int]:
    """Statistics of real images, computed once per (data key, detector) and kept in
    `cache_dir` (written to a temporary name, then renamed)."""
    detector = getattr(extractor, "detector_id", getattr(extractor, "__qualname__", repr(extractor)))
    digest = hashlib.sha256(f"{key}\n{detector}".encode()).hexdigest()[:16]
    path = Path(cache_dir) / f"fid-stats-{digest}.npz"
    if path.is_file():
        with np.load(path) as z:
            return z["mu"], z["sigma"], int(z["n"])
    mu, sigma, n = activation_statistics(batches(), extractor)
    npz = io.BytesIO()
    np.savez(npz, mu=mu, sigma=sigma, n=n, about=json.dumps({"key": key, "detector": detector}))
    write_bytes_atomic(path, npz.getvalue())
    return mu, sigma, n


def fid_cache_dir(params: Params, root: Path) -> str | None:
    """Where val/fid keeps real-image statistics, or None when the Inception weights are absent
    (val/fid is then not computed; colorray.metrics.fid says where to put them)."""
    return str(root / "data" / "fid_cache") if fid_available(params.metrics.fid_weights) else None
