"""Each source's fetch + parser on a small archive the test builds in the official layout."""
import gzip
import io
import tarfile
import zipfile

import numpy as np
import pytest

from colorray.config import DataParams
from colorray.data.download import ChecksumError
from colorray.data.shards import SPLITS, write_shards
from colorray.data.sources import (SKIMAGE_PHOTOS, colorize_digit, fetch_source, get_source,
                                   mnist_ab)

from conftest import (TINY_IMAGENET_MINI, TINY_IMAGENET_MINI_SHA256, jpeg_bytes, needs_tiny_imagenet,
                      tiny_imagenet_zip, write_zip)


def _run(tmp_path, **params):
    cfg = DataParams(image_size=32, **params)
    fetch_source(cfg, tmp_path / "raw", tmp_path / "dl")
    return write_shards(cfg, tmp_path / "raw", tmp_path / "shards", workers=1, progress=False)


def test_tiny_imagenet_layout(tmp_path):
    archive = tmp_path / "tiny.zip"
    sha = tiny_imagenet_zip(archive, ["n01", "n02"], per_class=5, val=6)

    m = _run(tmp_path, source="tiny-imagenet", url=archive.as_uri(), sha256=sha)
    assert m["splits"]["train"]["count"] == 10  # official train is the training split
    assert m["splits"]["val"]["count"] + m["splits"]["test"]["count"] == 6  # official val held out
    assert m["labels"] == ["n01", "n02"]
    assert not any("test" in p.parts for p in (tmp_path / "raw").rglob("*"))  # the official test/ never extracted
    assert m["provenance"]["files"][0]["verified"] is True


def test_wrong_checksum_is_refused_and_raw_is_not_created(tmp_path):
    archive = write_zip(tmp_path / "tiny.zip", {"tiny-imagenet-200/train/n01/images/a.JPEG": jpeg_bytes(1)})
    cfg = DataParams(source="tiny-imagenet", url=archive.as_uri(), sha256="1" * 64)
    with pytest.raises(ChecksumError, match="checksum mismatch"):
        fetch_source(cfg, tmp_path / "raw", tmp_path / "dl")
    assert not (tmp_path / "raw").exists()


def test_places365_keeps_only_the_chosen_category(tmp_path):
    archive = tmp_path / "train_256_places365standard.tar"
    with tarfile.open(archive, "w") as tf:
        for i, member in enumerate([
            "data_256/a/athletic_field/outdoor/00000001.jpg",
            "data_256/a/athletic_field/outdoor/00000002.jpg",
            "data_256/a/athletic_field/outdoor/00000003.jpg",
            "data_256/a/airfield/00000001.jpg",
            "data_256/b/beach/00000001.jpg",
        ]):
            data = jpeg_bytes(i)
            ti = tarfile.TarInfo(member)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    m = _run(tmp_path, source="places365", url=archive.as_uri(), val_fraction=0, test_fraction=0)
    assert m["inputs"] == 3 and m["kept"] == 3
    assert m["labels"] == ["athletic_field/outdoor"]
    assert not list((tmp_path / "raw").rglob("airfield"))  # other categories never extracted


def test_coco2017_uses_official_val_as_test_and_subsets_by_hash(tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    write_zip(mirror / "train2017.zip", {f"train2017/{i:012d}.jpg": jpeg_bytes(i) for i in range(40)})
    write_zip(mirror / "val2017.zip", {f"val2017/{i:012d}.jpg": jpeg_bytes(100 + i) for i in range(10)})
    m = _run(tmp_path, source="coco2017", url=mirror.as_uri() + "/", subset_fraction=0.5)
    assert m["inputs"] == 50
    assert m["kept"] + m["outside_subset"] == 50 and 10 < m["kept"] < 40
    assert 0 < m["splits"]["test"]["count"] <= 10  # only official val images reach test
    m2 = _run(tmp_path / "again", source="coco2017", url=mirror.as_uri() + "/", subset_fraction=0.5)
    assert m2["splits"] == m["splits"]  # the subset is deterministic


def test_celeba_follows_the_official_partition(tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    write_zip(mirror / "img_align_celeba.zip", {f"img_align_celeba/{i:06d}.jpg": jpeg_bytes(i) for i in range(1, 10)})
    (mirror / "list_eval_partition.txt").write_text(
        "".join(f"{i:06d}.jpg {0 if i <= 5 else 1 if i <= 7 else 2}\n" for i in range(1, 10)))
    source = get_source("celeba")
    # The registry's md5s are for the real files: a mirror of fixtures must not pass them.
    with pytest.raises(ChecksumError):
        _run(tmp_path, source="celeba", url=mirror.as_uri())
    object.__setattr__(source, "files", tuple(type(f)(f.name, f.url, None) for f in source.files))
    try:
        m = _run(tmp_path / "ok", source="celeba", url=mirror.as_uri())
    finally:
        del source.files  # back to the class attribute
    assert [m["splits"][s]["count"] for s in SPLITS] == [5, 2, 2]


def test_celeba_without_a_url_says_where_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="Google Drive"):
        fetch_source(DataParams(source="celeba"), tmp_path / "raw", tmp_path / "dl")


def _idx(arr: np.ndarray) -> bytes:
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return gzip.compress(header + arr.astype(np.uint8).tobytes())


def test_mnist_hue_formula_follows_study_001():
    # Digit 0 with u = 0: v = 0, (a, b) = (sin 0, cos 0) = (0, 1) -> (0.5, 1.0).
    assert mnist_ab(0, 0.0) == pytest.approx((0.5, 1.0))
    # Digit 5 with u = 0: v = pi -> (0, -1) -> (0.5, 0.0); every value lies in [0, 1].
    assert mnist_ab(5, 0.0) == pytest.approx((0.5, 0.0), abs=1e-12)
    for d in range(10):
        for u in (-0.5, -0.2, 0.3, 0.5):
            a, b = mnist_ab(d, u)
            assert 0 <= a <= 1 and 0 <= b <= 1 and max(abs(a - 0.5), abs(b - 0.5)) == pytest.approx(0.5)


def test_colorized_mnist_from_idx_files(tmp_path):
    rng = np.random.default_rng(0)
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    digits = {"train": np.arange(12) % 10, "t10k": np.array([3, 7, 1])}
    for prefix, labels in digits.items():
        images = rng.integers(0, 256, (len(labels), 28, 28))
        (mirror / f"{prefix}-images-idx3-ubyte.gz").write_bytes(_idx(images))
        (mirror / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(_idx(labels))
    source = get_source("colorized-mnist")
    object.__setattr__(source, "files", tuple(type(f)(f.name, f.url, None) for f in source.files))
    try:
        m = _run(tmp_path, source="colorized-mnist", url=mirror.as_uri())
    finally:
        del source.files
    assert m["inputs"] == 15 and m["kept"] == 15
    assert m["splits"]["test"]["count"] == 3
    assert m["labels"] == [str(d) for d in range(10)]
    # A white digit 0 with u = 0 is colored with a = 0, b = +127 (yellow-green side).
    rgb = colorize_digit(np.full((2, 2), 255, np.uint8), 0, 0.0)
    from skimage.color import rgb2lab
    lab = rgb2lab(rgb)
    assert lab[..., 2].mean() > 60 and abs(lab[..., 1].mean()) < lab[..., 2].mean()


def test_skimage_holds_out_whole_photos(skimage_shards):
    import json
    manifest = json.loads((skimage_shards / "manifest.json").read_text())
    splits = {}
    for tar in skimage_shards.glob("*.tar.gz"):
        with tarfile.open(tar) as tf:
            for mem in tf.getmembers():
                if mem.name.endswith(".json"):
                    meta = json.load(tf.extractfile(mem))
                    assert meta["split"] == tar.name.split("-")[0]
                    splits.setdefault(meta["label"], set()).add(meta["split"])
    assert all(len(s) == 1 for s in splits.values()), splits  # no photo in two splits
    assert splits == {photo: {split} for photo, split in SKIMAGE_PHOTOS.items()}  # every bundled photo, where it belongs
    assert manifest["splits"]["train"]["count"] > 2000 and not manifest["dropped"]


@needs_tiny_imagenet
@pytest.mark.slow
def test_real_tiny_imagenet_mini_archive(tmp_path):
    # Count the images independently, from the zip's own listing. (The shared mini archive
    # holds 20,100: 202 training classes of 50, two more than the official 200, plus 10,000 val.)
    with zipfile.ZipFile(TINY_IMAGENET_MINI) as zf:
        names = [n for n in zf.namelist() if n.endswith(".JPEG")]
    n_train = sum("/train/" in n for n in names)
    n_val = sum("/val/" in n for n in names)
    m = _run(tmp_path, source="tiny-imagenet", url=TINY_IMAGENET_MINI.as_uri(),
             sha256=TINY_IMAGENET_MINI_SHA256)
    assert m["inputs"] == n_train + n_val == len(names)
    assert m["kept"] + len(m["dropped"]) == m["inputs"]  # every input image accounted for
    dropped_train = sum(d["key"].startswith("train/") for d in m["dropped"])
    assert m["splits"]["train"]["count"] + dropped_train == n_train
    assert m["splits"]["val"]["count"] > 0 and m["splits"]["test"]["count"] > 0
    assert m["provenance"]["files"][0]["verified"] is True
