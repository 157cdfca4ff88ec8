"""Colorize images with a trained generator: the code behind the evaluate stage's grids, the
MLflow pyfunc model (colorray.pyfunc) and `colorray colorize`.

The generator runs at the size it was trained at, or at a chosen render size (short side N,
aspect kept: `--render-size`, the pyfunc's `render_size` parameter); its ab prediction is
upsampled to the image's own size and joined with the image's ORIGINAL full-resolution L, so
the output keeps the input's resolution, detail and lightness (its L equals the input's within
rounding).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from colorray.atomic import write_bytes_atomic
from colorray.color import lab_to_rgb_normalized, rgb_uint8_to_lab, to_uint8
from colorray.data.decode import IMAGE_EXTENSIONS, BadImage, decode_image
from colorray.data.shards import read_image_file
from colorray.images import array_to_uint8, encode
from colorray.model_uri import builtin_weights, download_weights, is_mlflow_uri
from colorray.models.files import generator_from_state, read_model_file


def enable_dropout(G: nn.Module) -> nn.Module:
    """Eval mode (BatchNorm uses its running statistics) with dropout left on: several calls
    give different colorizations of one image (study 003, fig. 4; pix2pix's only noise)."""
    G.eval()
    for m in G.modules():
        if isinstance(m, nn.Dropout):
            m.train()
    return G


def as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """(H, W) gray, (H, W, 1), (H, W, 3) or (H, W, 4) of uint8 / uint16 / float in [0, 1] ->
    (H, W, 3) uint8."""
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] not in (3, 4):
        raise ValueError(f"expected an image of shape (H, W), (H, W, 3) or (H, W, 4), got {a.shape}")
    a = a[..., :3]
    if a.dtype == np.uint8:
        return np.ascontiguousarray(a)
    if a.dtype == np.uint16:
        return (a.astype(np.float32) / 257.0).round().astype(np.uint8)
    if np.issubdtype(a.dtype, np.floating):
        return array_to_uint8(np.clip(a, 0, 1))
    raise ValueError(f"unsupported image dtype {a.dtype}")


STRIP_ROWS = 256  # full-resolution rows converted at a time: bounds the float32 intermediates


def full_resolution_L(image: np.ndarray, device="cpu") -> torch.Tensor:
    """The image's own L (normalised, (1, 1, H, W)), converted strip by strip."""
    rgb = torch.from_numpy(np.require(as_rgb_uint8(image), requirements=["C", "W"]))[None]
    return torch.cat([rgb_uint8_to_lab(rgb[:, r:r + STRIP_ROWS], device)[0]
                      for r in range(0, rgb.shape[1], STRIP_ROWS)], dim=2)


def stride_of(G: nn.Module) -> int:
    """The multiple the generator's input sides must be (its total downsampling)."""
    while not hasattr(G, "stride") and isinstance(getattr(G, "G", None), nn.Module):
        G = G.G  # colorray.precision.InferenceGenerator wraps it
    return int(getattr(G, "stride", 1))


MAX_RENDER_SIZE = 4096  # the generator's input short side: its activations grow with its square
# What the generator may see, whatever the short side and the aspect ratio: a 16 x 8000 photo at
# render size 4096 would otherwise ask for a 4096 x 2,048,000 input (33.5 GB of L alone).
MAX_RENDER_PIXELS = MAX_RENDER_SIZE * MAX_RENDER_SIZE


class RenderTooLarge(ValueError):
    """The render shape a photo and render size ask for is over MAX_RENDER_PIXELS."""


def render_shape(h: int, w: int, image_size: int, render_size: int | None = None, stride: int = 1) -> tuple[int, int]:
    """The size the generator sees a (h, w) photo at. render_size None: the square it was trained
    on (image_size x image_size; the whole photo, squeezed, as DeOldify's render_factor does).
    render_size N: short side N, the long side in proportion, both rounded to the nearest
    multiple of `stride` (at least one stride)."""
    if render_size is None:
        return image_size, image_size
    scale = render_size / min(h, w)
    shape = tuple(max(stride, round(side * scale / stride) * stride) for side in (h, w))
    if shape[0] * shape[1] > MAX_RENDER_PIXELS:
        raise RenderTooLarge(
            f"a {w}x{h} photo at render size {render_size} would be rendered at {shape[1]}x{shape[0]} "
            f"({shape[0] * shape[1] / 1e6:,.1f} megapixels), over the limit of {MAX_RENDER_PIXELS / 1e6:.1f} "
            f"megapixels; use a smaller render size (or none: the training size)")
    return shape


def model_input(L: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """The full-resolution L resized (antialiased) to `shape`, what the generator sees."""
    small = F.interpolate(L, size=shape, mode="bilinear", antialias=True, align_corners=False)
    return small.clamp(-1, 1)


def recombine(L: torch.Tensor, ab_small: torch.Tensor) -> np.ndarray:
    """Predicted ab (1, 2, s, s) upsampled to L's size and joined with L -> (H, W, 3) uint8.
    Memory: L and the upsampled ab (3 floats a pixel) and the 8-bit result; the conversion to
    RGB runs in strips of STRIP_ROWS rows."""
    H, W = L.shape[-2:]
    ab = F.interpolate(ab_small.float(), size=(H, W), mode="bilinear", align_corners=False)
    out = np.empty((H, W, 3), np.uint8)
    for r in range(0, H, STRIP_ROWS):
        rgb = lab_to_rgb_normalized(L[..., r:r + STRIP_ROWS, :], ab[..., r:r + STRIP_ROWS, :])[0]
        out[r:r + STRIP_ROWS] = to_uint8(rgb).cpu().numpy()
    return out


@torch.no_grad()
def colorize_batch(G: nn.Module, images: list[np.ndarray], image_size: int, device="cpu",
                   render_size: int | None = None) -> list[np.ndarray]:
    """Images of any sizes (gray or color; color is discarded) -> (H, W, 3) uint8 RGB each, at
    their own size. The generator sees each at render_shape(); one call per distinct shape
    (one call for the whole batch at the default render size)."""
    Ls = [full_resolution_L(im, device) for im in images]
    shapes = [render_shape(*L.shape[-2:], image_size, render_size, stride_of(G)) for L in Ls]
    out: list = [None] * len(Ls)
    for shape in dict.fromkeys(shapes):
        idx = [i for i, s in enumerate(shapes) if s == shape]
        ab = G(torch.cat([model_input(Ls[i], shape) for i in idx])).float()
        for j, i in enumerate(idx):
            out[i] = recombine(Ls[i], ab[j:j + 1])
    return out


def colorize(G: nn.Module, image: np.ndarray, image_size: int, device="cpu", render_size: int | None = None) -> np.ndarray:
    """One image of any size -> (H, W, 3) uint8 RGB."""
    return colorize_batch(G, [image], image_size, device, render_size)[0]


# ---- the `colorray colorize` command ------------------------------------------------------------

def load_model(ref: str, device="cpu", tracking_uri: str | None = None) -> tuple[nn.Module, int]:
    """(generator, its training image size) from the model that ships with colorray
    (`builtin:base`), a generator file, a training checkpoint, or an MLflow model URI
    (`models:/colorray@champion`, `models:/colorray/<version>`, `models:/<model_id>`) in
    `tracking_uri`'s store (None: MLflow's current one). Only tensors are loaded, from every
    kind of source (colorray.model_uri); fp16 weights are loaded into the fp32 generator."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="colorray-model-") as tmp:
        if is_mlflow_uri(ref):
            path = download_weights(ref, Path(tmp), tracking_uri)
        elif ref.startswith("builtin:"):
            path = builtin_weights(ref)
        else:
            path = Path(ref)
            if not path.is_file():
                raise FileNotFoundError(f"--model {ref}: no such file (a generator .pt, a checkpoint.pt, or an MLflow "
                                        "models:/ URI)")
        model = read_model_file(path, what=f"--model {ref}")
    try:
        G = generator_from_state(model.params, model.G)
    except RuntimeError as e:  # weights that do not fit the parameters stored beside them
        raise ValueError(f"--model {ref}: a damaged model file ({e})") from None
    return G.to(device), model.params.data.image_size


def find_inputs(inputs: list[str]) -> list[tuple[Path, Path]]:
    """(file, its path relative to the output folder) for files, folders (recursive, image
    extensions only) and glob patterns; in the order given, each file once."""
    import glob

    found: dict[Path, Path] = {}
    for arg in inputs:
        p = Path(arg)
        if p.is_dir():
            for f in sorted(p.rglob("*")):  # a FIFO or device named like a photo is listed, and refused by name
                if f.suffix.lower() in IMAGE_EXTENSIONS and not f.is_dir():
                    found.setdefault(f.resolve() if f.exists() else f.absolute(), f.relative_to(p))
        elif p.is_file():
            found.setdefault(p.resolve(), Path(p.name))
        else:
            matches = sorted(glob.glob(arg, recursive=True))
            if not matches:
                raise FileNotFoundError(f"{arg}: no such file, folder or matching files")
            for m in matches:
                if Path(m).is_file():
                    found.setdefault(Path(m).resolve(), Path(Path(m).name))
    return list(found.items())


def _encode(rgb: np.ndarray, fmt: str) -> bytes:
    # PNG at zlib level 1: 2-3x faster than Pillow's default 6 on a 12-MP photo, files ~30% larger.
    return encode(rgb, fmt, **{"jpg": {"quality": 95}, "png": {"compress_level": 1}}.get(fmt, {}))


BATCH_PIXELS = 16_000_000  # full-resolution pixels decoded and held at once (one bigger photo alone)


def output_names(files: list[tuple[Path, Path]], out_dir: Path, fmt: str, samples: int) -> dict[Path, list[Path]]:
    """Each input's output paths, every one claimed once: `x.jpg` and `x.png` of one folder (or
    of two folders, or globs) would both be `x.png`; the later one becomes `x_jpg.png` (then
    `x_jpg-2.png`, ...)."""
    claimed: set[Path] = set()
    names = {}
    for src, rel in files:
        def paths(stem: str) -> list[Path]:
            return ([out_dir / rel.with_name(f"{stem}.{fmt}")] if samples == 1 else
                    [out_dir / rel.with_name(f"{stem}_sample{k + 1}.{fmt}") for k in range(samples)])

        candidates = [rel.stem, f"{rel.stem}_{rel.suffix.lstrip('.').lower()}"]
        candidates += [f"{candidates[1]}-{n}" for n in range(2, len(files) + 2)]
        targets = next(t for t in map(paths, candidates) if not {p.resolve() for p in t} & claimed)
        claimed |= {p.resolve() for p in targets}
        names[src] = targets
    return names


def colorize_files(G: nn.Module, image_size: int, files: list[tuple[Path, Path]], out_dir: Path, *,
                   fmt: str = "png", side_by_side: bool = False, samples: int = 1, overwrite: bool = False,
                   replace_inputs: bool = False, batch_size: int = 8, device="cpu", progress: bool = True,
                   seed: int = 0, render_size: int | None = None) -> dict:
    """Colorize each file into `out_dir` (atomic writes); bad files are reported, not fatal.
    Up to `batch_size` photos share a generator call (photos of one render shape), as long as
    they hold no more than BATCH_PIXELS pixels together (the memory bound; a larger photo goes
    alone). `overwrite`
    replaces earlier outputs; an output that is one of the inputs is replaced only with
    `replace_inputs` as well. Returns {"written": [...], "failed": {file: reason},
    "skipped": {file: reason}, "renamed": {file: output}}."""
    from tqdm import tqdm

    inputs = {f for f, _ in files}
    written, failed, skipped, renamed = [], {}, {}, {}
    outputs = output_names(files, out_dir, fmt, samples)
    pending: list[tuple[list[Path], np.ndarray]] = []
    if samples > 1:
        enable_dropout(G)
        torch.manual_seed(seed)

    def flush():
        for k in range(samples):  # with dropout on, each call is another colorization
            outs = colorize_batch(G, [rgb for _, rgb in pending], image_size, device, render_size)
            for (targets, rgb), out in zip(pending, outs):
                if side_by_side:
                    out = np.concatenate([_gray_of(rgb), out], axis=1)
                write_bytes_atomic(targets[k], _encode(out, fmt))
                written.append(str(targets[k]))
        pending.clear()

    for src, rel in tqdm(files, desc="colorize", unit="img", disable=not progress):
        targets = outputs[src]
        if targets[0].stem.removesuffix("_sample1") != rel.stem:
            renamed[str(src)] = str(targets[0])
        clash = next((t for t in targets if t.resolve() in inputs), None)
        if clash is not None and not (overwrite and replace_inputs):
            skipped[str(src)] = f"the output {clash} is an input (--overwrite --replace-inputs replaces it)"
            continue
        existing = next((t for t in targets if t.exists()), None)
        if existing is not None and not overwrite:
            skipped[str(src)] = f"{existing} exists (--overwrite replaces it)"
            continue
        try:
            rgb = decode_image(read_image_file(src, follow_links=True))
        except BadImage as e:
            failed[str(src)] = str(e)
            continue
        try:
            render_shape(*rgb.shape[:2], image_size, render_size, stride_of(G))
        except RenderTooLarge as e:
            failed[str(src)] = str(e)
            continue
        held = sum(im.shape[0] * im.shape[1] for _, im in pending)
        if pending and (len(pending) >= batch_size or held + rgb.shape[0] * rgb.shape[1] > BATCH_PIXELS):
            flush()
        pending.append((targets, rgb))
    if pending:
        flush()
    G.eval()
    return {"written": written, "failed": failed, "skipped": skipped, "renamed": renamed}


def _gray_of(rgb: np.ndarray) -> np.ndarray:
    """The input as the model sees it, (H, W, 3) uint8: its L with zero chroma, converted in
    strips of STRIP_ROWS rows like the colorization itself."""
    return recombine(full_resolution_L(rgb), torch.zeros(1, 2, 1, 1))
