"""Defensive decoding, and the folder source on a user's messy photo folder."""
import io
import json
import tarfile

import numpy as np
import pytest
from PIL import Image

from colorray.config import DataParams
from colorray.data.decode import BadImage, decode_image, mean_chroma
from colorray.data.shards import write_shards
from colorray.data.sources import fetch_source

RNG = np.random.default_rng(0)


def _colorful(w=48, h=32):
    x = np.linspace(0, 255, w, dtype=np.uint8)[None, :].repeat(h, 0)
    return np.stack([x, 255 - x, np.full_like(x, 90)], -1)


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def good_files() -> dict[str, bytes]:
    rgb = Image.fromarray(_colorful())
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    pal = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    return {
        "plain.jpg": _encode(rgb, "JPEG"),
        "gray.png": _encode(rgb.convert("L"), "PNG"),
        "cmyk.jpg": _encode(rgb.convert("CMYK"), "JPEG"),
        "deep16.png": _encode(Image.fromarray((np.arange(48 * 32).reshape(32, 48) * 40).astype(np.uint16)), "PNG"),
        "deep16.tif": _encode(Image.fromarray((np.arange(48 * 32).reshape(32, 48) * 40).astype(np.uint16)), "TIFF"),
        "palette.png": _encode(pal, "PNG", transparency=0),
        "alpha.png": _encode(rgb.convert("RGBA"), "PNG"),
        "rotated.jpg": _encode(rgb, "JPEG", exif=exif),
        "photo.webp": _encode(rgb, "WEBP"),
        "old.bmp": _encode(rgb, "BMP"),
        "album/nested/deep.JPEG": _encode(rgb, "JPEG"),
    }


def bad_files() -> dict[str, tuple[bytes, str]]:
    jpeg = _encode(Image.fromarray(_colorful(200, 150)), "JPEG")
    return {
        "empty.jpg": (b"", "empty file"),
        "truncated.jpg": (jpeg[: len(jpeg) // 2], "truncated"),
        "corrupt.png": (b"\x89PNG\r\n\x1a\n" + RNG.bytes(300), "corrupt"),
        "notes.txt": (b"grandma's album, 1931", "not an image"),
        "random.jpg": (RNG.bytes(2000), "not an image"),
    }


def test_exif_orientation_is_applied():
    img = Image.fromarray(_colorful(48, 32))
    exif = Image.Exif()
    exif[0x0112] = 6
    arr = decode_image(_encode(img, "PNG", exif=exif))
    assert arr.shape == (48, 32, 3)  # displayed upright: width and height swapped


def test_alpha_is_composited_on_white_and_sixteen_bit_is_scaled():
    rgba = np.zeros((4, 4, 4), np.uint8)  # fully transparent black
    assert (decode_image(_encode(Image.fromarray(rgba, "RGBA"), "PNG")) == 255).all()
    deep = np.full((4, 4), 65535, np.uint16)
    assert (decode_image(_encode(Image.fromarray(deep), "PNG")) == 255).all()


@pytest.mark.parametrize("name", list(bad_files()))
def test_bad_inputs_raise_with_a_reason(name):
    data, reason = bad_files()[name]
    with pytest.raises(BadImage, match=reason):
        decode_image(data)


def test_mean_chroma_is_zero_for_gray_and_large_for_color():
    assert mean_chroma(np.full((8, 8, 3), 128, np.uint8)) < 0.01  # skimage's white point: ~0.003
    assert mean_chroma(_colorful()) > 20


def _shard_keys(shards_dir):
    keys = {}
    for tar in sorted(shards_dir.glob("*.tar")):
        with tarfile.open(tar) as tf:
            for m in tf.getmembers():
                if m.name.endswith(".json"):
                    meta = json.load(tf.extractfile(m))
                    keys.update(dict(zip(meta["keys"], meta["labels"])))
    return keys


def test_folder_source_shards_every_good_file_and_names_every_bad_one(tmp_path):
    photos = tmp_path / "photos"
    for name, data in good_files().items():
        (photos / name).parent.mkdir(parents=True, exist_ok=True)
        (photos / name).write_bytes(data)
    for name, (data, _) in bad_files().items():
        (photos / name).write_bytes(data)
    cfg = DataParams(source="folder", path=str(photos), image_size=32, val_fraction=0, test_fraction=0)
    fetch_source(cfg, tmp_path / "raw", tmp_path / "dl")
    manifest = write_shards(cfg, tmp_path / "raw", tmp_path / "shards", progress=False)

    # A file without an image extension is not even copied: named in the manifest's ignored list.
    not_copied = {line.split(": ", 1)[0]: line.split(": ", 1)[1] for line in manifest["ignored"]}
    assert set(not_copied) == {"notes.txt"} and "not an image file extension" in not_copied["notes.txt"]
    dropped = {d["key"]: d["reason"] for d in manifest["dropped"]}
    assert set(dropped) | set(not_copied) == set(bad_files())
    for name, (_, reason) in bad_files().items():
        assert reason in dropped.get(name, not_copied.get(name))
    sharded = _shard_keys(tmp_path / "shards")
    assert set(sharded) == set(good_files())
    assert sharded["album/nested/deep.JPEG"] == "album"  # label: the top-level folder
    assert manifest["inputs"] == manifest["kept"] + len(manifest["dropped"]) == 15


def test_near_grayscale_images_are_dropped_when_asked(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "color.png").write_bytes(_encode(Image.fromarray(_colorful()), "PNG"))
    (photos / "gray.png").write_bytes(_encode(Image.fromarray(_colorful()).convert("L"), "PNG"))
    cfg = DataParams(source="folder", path=str(photos), image_size=32, min_chroma=3.0,
                     val_fraction=0, test_fraction=0)
    fetch_source(cfg, tmp_path / "raw", tmp_path / "dl")
    manifest = write_shards(cfg, tmp_path / "raw", tmp_path / "shards", workers=1, progress=False)
    assert [(d["key"], d["reason"].split(" (")[0]) for d in manifest["dropped"]] == [("gray.png", "near-grayscale")]
    assert manifest["kept"] == 1


def test_folder_source_without_a_folder_names_the_path(tmp_path):
    cfg = DataParams(source="folder", path=str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="data.path"):
        fetch_source(cfg, tmp_path / "raw", tmp_path / "dl")
    assert not (tmp_path / "raw").exists()
