"""The metric registry: every metric with the direction that makes it better, and one
implementation of every image metric, used by training and tuning
(on val images, names prefixed `val/`) and by the evaluate stage (on the test split), so the
numbers in MLflow, tune/results.csv and eval/metrics.json mean the same thing.

All metrics compare a colorization with the ground truth sharing its L channel; images are
normalised Lab tensors as the loader gives them (L (N, 1, H, W), ab (N, 2, H, W), in [-1, 1]).

Photos that are already gray (black-and-white photos in a dataset of color ones) are not
scored: they have no color to restore, and leaving them gray would reproduce them exactly, a
PSNR of 100 dB (the cap) against ~25 dB for a typical photo. In Tiny-ImageNet's val split 2% of
the photos are gray, which raised gray's mean PSNR by 1.7 dB and made every colorizer look 1 to
1.5 dB worse than gray by them alone. Colorization benchmarks leave them out for the same reason
(Larsson et al. 2016's ImageNet test set, ctest10k, is one); `gray_photos` counts them.

| name | better | how |
|---|---|---|
| l1 | lower | mean abs error of normalised ab (the training loss's L1) |
| psnr | higher | skimage `peak_signal_noise_ratio` of 8-bit RGB, mean over images (capped at 100 dB) |
| psnr_ab | higher | the same on normalised ab (data range 2) |
| ssim | higher | skimage `structural_similarity` of 8-bit RGB (7x7 window, channels averaged) |
| uiqi | higher | Wang & Bovik's universal quality index, torchmetrics (11x11 Gaussian window), RGB |
| lpips | lower | torchmetrics LPIPS (AlexNet), only when torchvision's AlexNet weights are on disk |
| colorfulness | - | Hasler & Süsstrunk CF of the colorization, mean over images |
| colorfulness_true | - | the same of the ground truth |
| delta_cf | lower | abs(colorfulness - colorfulness_true) (DDColor's convention) |
| fid | lower | pytorch-fid's Fréchet Inception distance against the real images (fid_images of each) |
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from colorray.color import lab_to_rgb_normalized, to_uint8
from colorray.metrics import colorfulness
from colorray.metrics.fid import activation_statistics, cached_statistics, frechet_distance

LOWER, HIGHER, NEITHER = "lower", "higher", "-"


@dataclass(frozen=True)
class Metric:
    name: str
    better: str  # LOWER | HIGHER | NEITHER: which way a model improves (selection, tune, report)
    needs: str = ""  # the model it needs ("lpips", "fid"); without one the metric is left out
    per_image: Callable | None = None  # (batch, model) -> one value per image; None: computed elsewhere


METRICS: dict[str, Metric] = {}


def register(name: str, better: str, needs: str = ""):
    """Add a metric. As a decorator, the function computes it per image from a `Batch`; called
    alone (`register(name, better)(None)`) it declares a metric computed elsewhere."""
    def add(per_image: Callable | None):
        METRICS[name] = Metric(name, better, needs, per_image)
        return per_image
    return add


def better(name: str) -> str:
    """Which way `name` (with or without the `val/` prefix) is better; NEITHER if unknown."""
    metric = METRICS.get(name.removeprefix("val/"))
    return metric.better if metric else NEITHER


PSNR_CAP = 100.0  # dB; identical images would give infinity
GRAY_PHOTO_LEVELS = 1.0  # a photo whose 8-bit R, G, B differ by at most this on average is gray


def already_gray(rgb8: np.ndarray) -> np.ndarray:
    """(N,) bool: which of these (N, H, W, 3) 8-bit photos are gray already (their channels'
    spread, max - min, averages at most GRAY_PHOTO_LEVELS; JPEG leaves a level or so)."""
    spread = rgb8.max(axis=-1).astype(np.int16) - rgb8.min(axis=-1)
    return spread.reshape(len(rgb8), -1).mean(axis=1) <= GRAY_PHOTO_LEVELS

LPIPS_NET = "alex"
# torchvision's AlexNet_Weights.DEFAULT.url, written out: importing torchvision.models to read it
# costs seconds (it loads torch._dynamo), in every evaluation that has no LPIPS weights at all.
# tests/test_metrics.py checks it against torchvision's.
LPIPS_WEIGHTS_URL = "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"


def lpips_weights_path() -> Path:
    """Where torchvision reads the AlexNet weights LPIPS needs (its hub cache; no download here)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(LPIPS_WEIGHTS_URL).name


def lpips_unavailable_message() -> str:
    return (f"LPIPS unavailable: torchvision's AlexNet weights are not at {lpips_weights_path()}. "
            f"Download {LPIPS_WEIGHTS_URL} and save it there (or set TORCH_HOME).")


def lpips_model(pretrained_backbone: bool = True):
    """torchmetrics' LPIPS (AlexNet backbone and its bundled linear layers), or None when the
    backbone's weights are absent. `pretrained_backbone=False` (tests) uses a random backbone."""
    if pretrained_backbone and not lpips_weights_path().is_file():
        return None
    from torchmetrics.functional.image.lpips import _NoTrainLpips

    return _NoTrainLpips(net=LPIPS_NET, pnet_rand=not pretrained_backbone).eval()


# skimage.metrics is imported where it is used: it loads scipy.stats (1 s), and every Ray
# training worker imports this module for its val metrics without computing PSNR or SSIM.
def psnr(pred: np.ndarray, true: np.ndarray, data_range: float) -> float:
    from skimage.metrics import peak_signal_noise_ratio

    if np.array_equal(pred, true):
        return PSNR_CAP
    return min(PSNR_CAP, float(peak_signal_noise_ratio(true, pred, data_range=data_range)))


def ssim(pred: np.ndarray, true: np.ndarray) -> float:
    """SSIM of two (H, W, 3) uint8 images, skimage's defaults (Wang et al. 2004 constants)."""
    from skimage.metrics import structural_similarity

    return float(structural_similarity(true, pred, channel_axis=-1, data_range=255))


def uiqi(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """Universal image quality index per image of (N, C, H, W) tensors."""
    from torchmetrics.functional.image import universal_image_quality_index

    q = universal_image_quality_index(pred.float(), true.float(), reduction="none")  # float64 is 10x slower
    return q.flatten(1).mean(1)


@dataclass(frozen=True)
class Batch:
    """One batch as every metric sees it: the colorization and the truth as RGB in [0, 1]
    (N, 3, H, W), as 8-bit images (N, H, W, 3), and as normalised ab."""
    rgb_pred: torch.Tensor
    rgb_true: torch.Tensor
    pred8: np.ndarray
    true8: np.ndarray
    ab_pred: torch.Tensor
    ab_true: torch.Tensor


@register("l1", LOWER)
def _l1(b: Batch, _):
    return (b.ab_pred - b.ab_true).abs().flatten(1).mean(1)


@register("psnr", HIGHER)
def _psnr(b: Batch, _):
    return [psnr(p, t, 255) for p, t in zip(b.pred8, b.true8)]


@register("psnr_ab", HIGHER)
def _psnr_ab(b: Batch, _):
    return [psnr(p, t, 2.0) for p, t in zip(b.ab_pred.cpu().numpy(), b.ab_true.cpu().numpy())]


@register("ssim", HIGHER)
def _ssim(b: Batch, _):
    return [ssim(p, t) for p, t in zip(b.pred8, b.true8)]


@register("uiqi", HIGHER)
def _uiqi(b: Batch, _):
    return uiqi(b.rgb_pred, b.rgb_true)


@register("colorfulness", NEITHER)
def _colorfulness(b: Batch, _):
    return colorfulness(b.rgb_pred)


@register("colorfulness_true", NEITHER)
def _colorfulness_true(b: Batch, _):
    return colorfulness(b.rgb_true)


@register("lpips", LOWER, needs="lpips")
def _lpips(b: Batch, model):  # inputs in [-1, 1]
    return model(b.rgb_pred.cpu() * 2 - 1, b.rgb_true.cpu() * 2 - 1).flatten()


# Computed from whole sets by MetricAccumulator.result(), and by the evaluate stage with the
# classifier (colorray.metrics.classifier).
register("delta_cf", LOWER)(None)
register("fid", LOWER, needs="fid")(None)
register("accuracy", HIGHER)(None)
register("cim", HIGHER)(None)
register("omega", LOWER)(None)


class MetricAccumulator:
    """Collects the registry's metrics batch by batch; `result()` gives one value per name.

    fid: an extractor from colorray.metrics.fid (None: no FID); fid_cache + fid_key: where the
    real images' statistics are cached and the key of those real images (the data's identity).
    lpips: a model from `lpips_model()` (None: no LPIPS).
    """

    def __init__(self, fid=None, fid_cache: Path | None = None, fid_key: str = "", lpips=None):
        self.fid, self.fid_cache, self.fid_key, self.lpips = fid, fid_cache, fid_key, lpips
        self.values: dict[str, list[torch.Tensor]] = {}
        self.fake_rgb, self.real_rgb = [], []
        self.n = 0  # photos scored
        self.gray_photos = 0  # photos left out: gray already (see the module's docstring)

    def _add(self, name: str, per_image) -> None:
        self.values.setdefault(name, []).append(torch.as_tensor(per_image, dtype=torch.float64).reshape(-1))

    @torch.no_grad()
    def update(self, L: torch.Tensor, ab_pred: torch.Tensor, ab_true: torch.Tensor) -> torch.Tensor:
        """Add a batch (its photos that are gray already are counted, not scored); returns its
        colorized RGB (N, 3, H, W) in [0, 1], every photo of it, for the caller's grids."""
        L, ab_pred, ab_true = L.float(), ab_pred.float(), ab_true.float()
        rgb_pred, rgb_true = lab_to_rgb_normalized(L, ab_pred), lab_to_rgb_normalized(L, ab_true)
        pred8, true8 = to_uint8(rgb_pred).cpu().numpy(), to_uint8(rgb_true).cpu().numpy()
        color = ~already_gray(true8)
        self.gray_photos += int((~color).sum())
        if not color.any():
            return rgb_pred
        keep = torch.from_numpy(color).to(L.device)
        batch = Batch(rgb_pred[keep], rgb_true[keep], pred8[color], true8[color], ab_pred[keep], ab_true[keep])
        models = {"": None, "lpips": self.lpips, "fid": self.fid}
        for m in METRICS.values():
            if m.per_image is not None and (not m.needs or models[m.needs] is not None):
                self._add(m.name, m.per_image(batch, models[m.needs]))
        if self.fid is not None:  # kept as 8-bit images, as pytorch-fid reads them from files (4x smaller)
            self.fake_rgb.append(torch.from_numpy(batch.pred8))
            self.real_rgb.append(torch.from_numpy(batch.true8))
        self.n += int(color.sum())
        return rgb_pred

    def result(self) -> dict:
        if not self.n:
            raise ValueError("no images to measure" + (f" ({self.gray_photos} photos, all gray already)"
                                                       if self.gray_photos else ""))
        out = {name: float(torch.cat(v).mean()) for name, v in self.values.items()}
        out["delta_cf"] = abs(out["colorfulness"] - out["colorfulness_true"])
        out["images"], out["gray_photos"] = self.n, self.gray_photos
        if self.fid is not None:
            def batches(images):  # (N, H, W, 3) uint8 -> (N, 3, H, W) in [0, 1]
                return (b.permute(0, 3, 1, 2).float() / 255.0 for b in images)

            key = json.dumps({"real": self.fid_key, "images": self.n}, sort_keys=True)
            real = cached_statistics(key, self.fid_cache, lambda: batches(self.real_rgb), self.fid)
            fake = activation_statistics(batches(self.fake_rgb), self.fid)
            out["fid"], out["fid_images"] = frechet_distance(fake, real), min(fake[2], real[2])
        return out
