"""Dataset sources: one registry of every dataset the studies used, plus the user's own folder.

A source knows its official download URL(s) and checksums (`fetch`) and how its extracted
layout maps to items with keys, labels and split hints (`list_items`). Everything after
that (decoding, filtering, splitting, sharding) is shared code in `shards.py`.

Split hints: "train"/"val"/"test" are fixed by the dataset; None means a hash split into
train/val/test by `data.val_fraction`/`data.test_fraction`; "heldout" is hashed into
val/test (the official set held out from training); "trainval" is hashed into train/val.
"""

from __future__ import annotations

import abc
import gzip
import hashlib
import json
import os
import shutil
import stat
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
from PIL import Image

from colorray.redact import redact
from colorray.atomic import OWNER_MARKER, replace_dir, staging_dir, write_json_atomic
from colorray.config import DataParams
from colorray.data.archive import extract
from colorray.data.decode import IMAGE_EXTENSIONS, MAX_FILE_BYTES
from colorray.data.download import download
from colorray.images import array_to_uint8


@dataclass(frozen=True)
class Item:
    key: str  # unique, stable: the split hash and the shard order derive from it
    path: str  # the file to decode
    split: str | None = None  # see the module docstring
    label: str = ""
    group: str | None = None  # items of one group share a split (all crops of one photo)
    crop: tuple[int, int, int, bool] | None = None  # (top, left, side, hflip), before resizing


@dataclass(frozen=True)
class RemoteFile:
    name: str
    url: str | None  # None: no direct download exists (see Source.manual)
    checksum: str | None = None  # "sha256:<hex>" or "md5:<hex>" as published


@dataclass
class Listing:
    items: list[Item]
    ignored: list[str] = field(default_factory=list)  # metadata files that are not samples


PROVENANCE = "SOURCE.json"  # written by fetch_source next to the data
OWNER_KIND = "raw"  # the ownership marker's kind (colorray.atomic)


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name not in (PROVENANCE, OWNER_MARKER))


def _is_image(p: Path) -> bool:
    return p.suffix.lower() in IMAGE_EXTENSIONS


def folder_file_problem(path: Path, follow_links: bool = False) -> str | None:
    """Why a file of the user's folder is not read (None: it is), from its metadata only:
    nothing is opened that is not a regular image file of a bounded size. Links are refused
    unless `follow_links` (colorize: a link to a photo is the user's own choice)."""
    st = path.stat() if follow_links else path.lstat()
    if stat.S_ISLNK(st.st_mode):
        return "symbolic link, not followed"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file (FIFO, device or socket), not opened"
    if not _is_image(path):
        return f"not an image file extension ({path.suffix or 'none'}; colorray reads {', '.join(IMAGE_EXTENSIONS)})"
    if st.st_size > MAX_FILE_BYTES:
        return f"{st.st_size / 2**20:,.0f} MiB, over the {MAX_FILE_BYTES / 2**20:,.0f} MiB limit for one image file"
    return None


class Source(abc.ABC):
    name: ClassVar[str]
    study: ClassVar[str] = ""
    files: ClassVar[tuple[RemoteFile, ...]] = ()
    manual: ClassVar[str | None] = None  # how to obtain the files when no URL works

    # ---- fetch ---------------------------------------------------------------------------
    def resolve(self, cfg: DataParams) -> list[tuple[RemoteFile, str, str | None]]:
        """(file, url, checksum) for each file, applying data.url / data.sha256 overrides.

        One-file sources: data.url replaces the URL and data.sha256 is its checksum (a URL
        of your own is unverified without it). Several files: data.url is the folder (base
        URL) that holds them under their official names; the official checksums still apply.
        """
        out = []
        for f in self.files:
            if cfg.url is None:
                url, checksum = f.url, f.checksum
                if cfg.sha256 is not None and len(self.files) == 1:
                    checksum = f"sha256:{cfg.sha256}"
            elif len(self.files) == 1:
                url, checksum = cfg.url, (f"sha256:{cfg.sha256}" if cfg.sha256 else None)
            else:
                url, checksum = cfg.url.rstrip("/") + "/" + f.name, f.checksum
            if url is None:
                raise FileNotFoundError(
                    f"data.source={self.name}: {f.name} has no direct download. {self.manual}"
                )
            out.append((f, url, checksum))
        return out

    def fetch(self, cfg: DataParams, raw: Path, downloads: Path) -> dict:
        """Download, verify and extract into `raw` (a fresh folder). Returns provenance."""
        record = []
        for f, url, checksum in self.resolve(cfg):
            # The cache name includes the URL, so a changed data.url never reuses a stale file.
            tag = hashlib.sha1(url.encode()).hexdigest()[:10]
            local = download(url, downloads / f"{tag}-{f.name}", checksum, max_bytes=cfg.max_download_bytes)
            self.unpack(f, local, raw, cfg)
            record.append({"name": f.name, "url": redact(url), "checksum": checksum,
                           "verified": checksum is not None})
        return {"files": record}

    def unpack(self, f: RemoteFile, local: Path, raw: Path, cfg: DataParams) -> None:
        extract(local, raw / f.name.split(".")[0], max_bytes=int(cfg.max_extract_gb * 1e9))

    # ---- list ----------------------------------------------------------------------------
    @abc.abstractmethod
    def list_items(self, raw: Path, cfg: DataParams) -> Listing:
        """Every input image of the fetched dataset as an Item (and the metadata files skipped)."""


SOURCES: dict[str, Source] = {}


def register(cls: type[Source]) -> type[Source]:
    SOURCES[cls.name] = cls()
    return cls


def get_source(name: str) -> Source:
    try:
        return SOURCES[name]
    except KeyError:
        raise KeyError(f"data.source: unknown source {name!r} (known: {', '.join(SOURCES)})") from None


# ---- skimage: the embedded default ---------------------------------------------------------

# Color photographs of everyday scenes that ship inside packages colorray already installs (no
# download): scikit-image's, two of scikit-learn's (CC BY 2.0, sklearn/datasets/images/README.txt)
# and matplotlib's portrait of Grace Hopper (a U.S. Navy photo, public domain). scikit-image's
# scientific images (hubble_deep_field, immunohistochemistry, retina) are left out: their stain
# and false colors taught the demo colors that real photos do not have. Whole photos are held
# out for val and test, so no val/test pixel is ever seen in training.
SKIMAGE_PHOTOS = {
    "astronaut": "train", "rocket": "train", "stereo_motorcycle": "train",
    "china": "train", "flower": "train", "grace_hopper": "train",
    "chelsea": "val", "coffee": "test",
}


def bundled_photo(photo: str) -> dict[str, np.ndarray]:
    """One bundled photo as {view name: RGB uint8 array}; the stereo pair is two views of one scene."""
    if photo in ("china", "flower"):
        from sklearn.datasets import load_sample_image
        return {"": load_sample_image(f"{photo}.jpg")}
    if photo == "grace_hopper":
        from matplotlib.cbook import get_sample_data
        with get_sample_data("grace_hopper.jpg") as f, Image.open(f) as img:
            return {"": np.asarray(img.convert("RGB"))}
    import skimage.data
    arrays = getattr(skimage.data, photo)()
    if photo == "stereo_motorcycle":  # (left, right, disparity)
        return {"left": arrays[0], "right": arrays[1]}
    return {"": arrays}


# Crop sides as fractions of the photo's short side, on a half-overlapping grid, each also
# mirrored: a few thousand multi-scale training views from eight photographs.
SKIMAGE_CROP_DIVISORS = (1, 2, 3, 4, 6)


def grid_crops(h: int, w: int) -> list[tuple[int, int, int, bool]]:
    crops = []
    for k in SKIMAGE_CROP_DIVISORS:
        side = min(h, w) // k
        stride = max(1, side // 2)
        for top in range(0, h - side + 1, stride):
            for left in range(0, w - side + 1, stride):
                crops += [(top, left, side, False), (top, left, side, True)]
    return crops


@register
class SkimageSource(Source):
    name = "skimage"
    study = "embedded default (no network)"

    def fetch(self, cfg, raw, downloads):
        for photo, split in SKIMAGE_PHOTOS.items():
            for view, arr in bundled_photo(photo).items():
                out = raw / split / (f"{photo}_{view}.png" if view else f"{photo}.png")
                out.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(arr).save(out)
        origin = {"china": "sklearn.datasets.load_sample_image('china.jpg')",
                  "flower": "sklearn.datasets.load_sample_image('flower.jpg')",
                  "grace_hopper": "matplotlib.cbook.get_sample_data('grace_hopper.jpg')"}
        return {"files": [{"name": origin.get(p, f"skimage.data.{p}"), "url": None, "verified": True}
                          for p in SKIMAGE_PHOTOS]}

    def list_items(self, raw, cfg):
        items = []
        for path in _files(raw):
            split = path.parent.name
            photo = path.stem.removesuffix("_left").removesuffix("_right")
            with Image.open(path) as img:
                w, h = img.size
            for top, left, side, flip in grid_crops(h, w):
                key = f"{path.stem}/{side}-{top}-{left}" + ("-flip" if flip else "")
                items.append(Item(key, str(path), split, photo, group=photo,
                                  crop=(top, left, side, flip)))
        return Listing(items)


# ---- folder: the user's own photos -----------------------------------------------------------

@register
class FolderSource(Source):
    name = "folder"
    study = "your own photos"

    def fetch(self, cfg, raw, downloads):
        src = Path(cfg.path).expanduser()
        if not src.is_dir():
            raise FileNotFoundError(f"data.path: {src} is not a folder")
        # A copy, so DVC versions exactly the photos this run used: regular files with an image
        # extension and a sane size only. Links are never followed (a loop, or a way out of the
        # folder), FIFOs and devices never opened, hidden files skipped; each skip is named.
        skipped = []
        for top, dirs, files in os.walk(src, followlinks=False):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(files) + [d for d in dirs if (Path(top) / d).is_symlink()]:
                path = Path(top) / name
                rel = path.relative_to(src)
                reason = folder_file_problem(path) if not name.startswith(".") else None
                if reason is not None:
                    skipped.append(f"{rel.as_posix()}: {reason}")
                elif not name.startswith("."):
                    out = raw / "images" / rel
                    out.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(path, out, follow_symlinks=False)
            dirs[:] = [d for d in dirs if not (Path(top) / d).is_symlink()]
        (raw / "images").mkdir(parents=True, exist_ok=True)
        return {"files": [{"name": str(src.resolve()), "url": None, "verified": False}], "skipped": skipped}

    def list_items(self, raw, cfg):
        root = raw / "images"
        items = []
        for p in _files(root):  # every copied file is an input: undecodable ones are dropped with a reason
            rel = p.relative_to(root)
            items.append(Item(rel.as_posix(), str(p), None, rel.parts[0] if len(rel.parts) > 1 else ""))
        provenance = raw / PROVENANCE  # the files fetch did not copy, each with its reason
        skipped = json.loads(provenance.read_text()).get("skipped", []) if provenance.exists() else []
        return Listing(items, skipped)


# ---- tiny-imagenet (study 000) -------------------------------------------------------------

@register
class TinyImageNetSource(Source):
    name = "tiny-imagenet"
    study = "000 (Standard GAN vs WGAN)"
    files = (RemoteFile("tiny-imagenet-200.zip", "https://cs231n.stanford.edu/tiny-imagenet-200.zip",
                        "md5:90528d7ca1a48142e341f4ef8d21d0de"),)

    def unpack(self, f, local, raw, cfg):
        # The official test/ folder is reserved for held-out evaluation: never extracted here
        # (every member is still checked), so nothing downstream can read it.
        extract(local, raw / f.name.split(".")[0], max_bytes=int(cfg.max_extract_gb * 1e9),
                select=lambda name: "test" not in name.replace("\\", "/").split("/")[:-1])

    def list_items(self, raw, cfg):
        items, ignored = [], []
        for p in _files(raw):
            parts = p.relative_to(raw).parts
            if "train" in parts and _is_image(p):  # .../train/<wnid>/images/<file>
                i = parts.index("train")
                items.append(Item("/".join(parts[i:]), str(p), "train", parts[i + 1]))
            elif "val" in parts and _is_image(p):  # .../val/images/<file>, labels in val_annotations.txt
                i = parts.index("val")
                items.append(Item("/".join(parts[i:]), str(p), "heldout"))
            elif "test" in parts and _is_image(p):
                ignored.append(f"{'/'.join(parts)}: official test image (unlabeled, not used)")
            else:
                ignored.append(f"{'/'.join(parts)}: metadata")
        labels = {}
        for ann in raw.rglob("val_annotations.txt"):
            for line in ann.read_text().splitlines():
                fields = line.split("\t")
                if len(fields) >= 2:
                    labels[fields[0]] = fields[1]
        items = [Item(it.key, it.path, it.split, labels.get(Path(it.path).name, ""))
                 if it.split == "heldout" else it for it in items]
        return Listing(items, ignored)


# ---- places365, Athletic Fields (study 001) -------------------------------------------------

def _places_category(member: str) -> str | None:
    """'data_256/a/athletic_field/outdoor/00000001.jpg' -> 'athletic_field/outdoor'."""
    parts = member.replace("\\", "/").split("/")
    if "data_256" not in parts:
        return None
    i = parts.index("data_256")
    rest = parts[i + 2:-1]  # skip the one-letter folder and the file name
    return "/".join(rest) if rest else None


@register
class Places365Source(Source):
    name = "places365"
    study = "001 (Athletic Fields category, 256x256 small images)"
    # md5 as published with torchvision's Places365 dataset.
    files = (RemoteFile("train_256_places365standard.tar",
                        "https://data.csail.mit.edu/places/places365/train_256_places365standard.tar",
                        "md5:53ca1c756c3d1e7809517cc47c5561c5"),)

    def unpack(self, f, local, raw, cfg):
        wanted = set(cfg.categories)
        # Only the chosen categories are written: the full archive is 1.8M images.
        extract(local, raw / "places365", max_bytes=int(cfg.max_extract_gb * 1e9),
                select=lambda name: _places_category(name) in wanted)

    def list_items(self, raw, cfg):
        items = []
        for p in _files(raw):
            rel = p.relative_to(raw).as_posix()
            cat = _places_category(rel)
            if cat is not None and cat in cfg.categories:
                items.append(Item(rel.split("data_256/", 1)[1], str(p), None, cat))
        return Listing(items)


# ---- coco2017 (studies 002, 003) --------------------------------------------------------------

@register
class Coco2017Source(Source):
    name = "coco2017"
    study = "002/003 (COCO-2017; data.subset_fraction = 0.2 for study 003)"
    # COCO publishes no checksums: fetched unverified (fetch says so) unless from a verified mirror.
    files = (RemoteFile("train2017.zip", "https://images.cocodataset.org/zips/train2017.zip"),
             RemoteFile("val2017.zip", "https://images.cocodataset.org/zips/val2017.zip"))

    def list_items(self, raw, cfg):
        items = []
        for p in _files(raw):
            parts = p.relative_to(raw).parts
            for folder, split in (("train2017", "trainval"), ("val2017", "test")):
                if folder in parts:
                    items.append(Item(f"{folder}/{p.name}", str(p), split))
        return Listing(items)


# ---- celeba (study 004) ---------------------------------------------------------------------

@register
class CelebASource(Source):
    name = "celeba"
    study = "004 (CelebA aligned faces)"
    files = (RemoteFile("img_align_celeba.zip", None, "md5:00d2c5bc6d35e252742224ab0c1e8fcb"),
             RemoteFile("list_eval_partition.txt", None, "md5:d32c9cbf5e040fd4025c592c306e6668"))
    manual = ("CelebA is distributed through Google Drive only: download img_align_celeba.zip "
              "and list_eval_partition.txt from https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html "
              "into one folder and set data.url to file:///that/folder/")

    def unpack(self, f, local, raw, cfg):
        if f.name.endswith(".zip"):
            super().unpack(f, local, raw, cfg)
        else:
            shutil.copyfile(local, raw / f.name)

    def list_items(self, raw, cfg):
        partition = {}
        part_file = raw / "list_eval_partition.txt"
        if part_file.exists():
            for line in part_file.read_text().splitlines():
                fields = line.split()
                if len(fields) == 2:
                    partition[fields[0]] = ("train", "val", "test")[int(fields[1])]
        items = [Item(p.name, str(p), partition.get(p.name)) for p in _files(raw) if _is_image(p)]
        return Listing(items, ["list_eval_partition.txt: metadata"] if partition else [])


# ---- colorized MNIST (study 001's toy) --------------------------------------------------------

MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (gzipped or not), as published at yann.lecun.com/exdb/mnist."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    body = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says {shape}, body has {body.size} bytes")
    return body.reshape(shape)


def mnist_ab(digit: int, u: float) -> tuple[float, float]:
    """Study 001: v = 2*pi*(D + u)/10, (a, b) = (sin v, cos v) projected onto the unit square
    and min-max normalised to [0, 1]: (0.5 a / max(|a|,|b|) + 0.5, 0.5 b / max(|a|,|b|) + 0.5)."""
    v = 2 * np.pi * (digit + u) / 10
    a, b = np.sin(v), np.cos(v)
    m = max(abs(a), abs(b))
    return 0.5 * a / m + 0.5, 0.5 * b / m + 0.5


def colorize_digit(gray: np.ndarray, digit: int, u: float) -> np.ndarray:
    """Color one MNIST digit: L from the stroke intensity, (a, b) from `mnist_ab`, read in the
    OpenCV 8-bit Lab convention the study cites (a = 255 * a01 - 128)."""
    from skimage.color import lab2rgb

    a01, b01 = mnist_ab(digit, u)
    lab = np.empty(gray.shape + (3,), np.float64)
    lab[..., 0] = gray.astype(np.float64) * (100.0 / 255.0)
    lab[..., 1] = 255.0 * a01 - 128.0
    lab[..., 2] = 255.0 * b01 - 128.0
    with warnings.catch_warnings():  # saturated (a, b) at dark L leave the sRGB gamut: clipped
        warnings.simplefilter("ignore", UserWarning)
        rgb = lab2rgb(lab)
    return array_to_uint8(rgb)


@register
class ColorizedMnistSource(Source):
    name = "colorized-mnist"
    study = "001 (toy: MNIST digits colored by a hue per digit)"
    files = (
        RemoteFile("train-images-idx3-ubyte.gz", "https://ossci-datasets.s3.amazonaws.com/mnist/train-images-idx3-ubyte.gz", "md5:f68b3c2dcbeaaa9fbdd348bbdeb94873"),
        RemoteFile("train-labels-idx1-ubyte.gz", "https://ossci-datasets.s3.amazonaws.com/mnist/train-labels-idx1-ubyte.gz", "md5:d53e105ee54ea40749a09fcbcd1e9432"),
        RemoteFile("t10k-images-idx3-ubyte.gz", "https://ossci-datasets.s3.amazonaws.com/mnist/t10k-images-idx3-ubyte.gz", "md5:9fb629c4189551a2d022fa330f9573f3"),
        RemoteFile("t10k-labels-idx1-ubyte.gz", "https://ossci-datasets.s3.amazonaws.com/mnist/t10k-labels-idx1-ubyte.gz", "md5:ec29112dd5afa0611ce80d1b7f02629c"),
    )

    def unpack(self, f, local, raw, cfg):
        (raw / "idx").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(local, raw / "idx" / f.name)

    def fetch(self, cfg, raw, downloads):
        record = super().fetch(cfg, raw, downloads)
        for split, (images_name, labels_name) in MNIST_FILES.items():
            images = read_idx(raw / "idx" / images_name)
            labels = read_idx(raw / "idx" / labels_name)
            if len(images) != len(labels):
                raise ValueError(f"{images_name}: {len(images)} images but {len(labels)} labels")
            # u ~ U[-0.5, 0.5] per image, from a fixed seed: the same colors on every machine.
            us = np.random.default_rng(0 if split == "train" else 1).uniform(-0.5, 0.5, len(images))
            for i, (img, digit, u) in enumerate(zip(images, labels, us)):
                out = raw / split / str(int(digit)) / f"{i:05d}.png"
                out.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(colorize_digit(img, int(digit), float(u))).save(out)
        shutil.rmtree(raw / "idx")
        return record

    def list_items(self, raw, cfg):
        items = []
        for p in _files(raw):
            split, digit = p.parent.parent.name, p.parent.name
            items.append(Item(f"{split}/{digit}/{p.name}", str(p),
                              "trainval" if split == "train" else "test", digit))
        return Listing(items)


def fetch_source(cfg: DataParams, raw: Path, downloads: Path) -> dict:
    """Run a source's fetch into a fresh `raw` folder, atomically (temp name, then rename)."""
    raw, downloads = Path(raw), Path(downloads)
    tmp = staging_dir(raw, ".fetching", OWNER_KIND)  # refuses a `raw` (or .old/.fetching) that is not colorray's
    try:
        record = get_source(cfg.source).fetch(cfg, tmp, downloads)
        record = {"source": cfg.source, **record}
        write_json_atomic(tmp / PROVENANCE, record)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_dir(tmp, raw, OWNER_KIND)
    return record
