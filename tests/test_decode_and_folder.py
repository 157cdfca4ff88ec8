"""Defensive decoding, and the folder source on a user's messy photo folder."""
import io
import json
import os
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
    for tar in sorted(shards_dir.glob("*.tar.gz")):
        with tarfile.open(tar) as tf:
            for m in tf.getmembers():
                if m.name.endswith(".json"):
                    meta = json.load(tf.extractfile(m))
                    keys[meta["key"]] = meta["label"]
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


# ---- issue 15: memory bombs, foreign formats, any decoder failure, what the folder source opens ----

def _png_strip(width: int, height: int) -> bytes:
    """A valid gray PNG of width x height: 1 x 2,000,000 compresses to a few KB."""
    import struct
    import zlib

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    raw = b"".join(b"\0" + b"\x80" * width for _ in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def test_an_elongated_png_is_a_dropped_file_not_a_memory_bomb(tmp_path):
    """1 x 2,000,000 (under Pillow's pixel limit): the old resize asked for 64 x 128,000,000."""
    from colorray.data.decode import resize_center_crop

    data = _png_strip(1, 2_000_000)
    assert len(data) < 10_000
    rgb = decode_image(data)
    with pytest.raises(BadImage, match="aspect ratio 1:2000000"):
        resize_center_crop(rgb, 64)
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "strip.png").write_bytes(data)
    (photos / "ok.png").write_bytes(_encode(Image.fromarray(_colorful()), "PNG"))
    cfg = DataParams(source="folder", path=str(photos), image_size=64, val_fraction=0, test_fraction=0)
    fetch_source(cfg, tmp_path / "raw", tmp_path / "dl")
    manifest = write_shards(cfg, tmp_path / "raw", tmp_path / "shards", workers=2, progress=False)
    assert [d["key"] for d in manifest["dropped"]] == ["strip.png"] and manifest["kept"] == 1


def test_a_wide_photo_is_cropped_in_source_coordinates():
    from colorray.data.decode import resize_center_crop

    rgb = np.zeros((40, 200, 3), np.uint8)
    rgb[:, 80:120] = 255  # the centred square is white
    out = resize_center_crop(rgb, 16)
    assert out.shape == (16, 16, 3) and out.min() > 200


def test_postscript_named_jpg_is_refused_without_ghostscript(monkeypatch):
    from PIL import EpsImagePlugin

    opened = []
    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "_open", lambda self: opened.append(1))
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"
    with pytest.raises(BadImage, match="PostScript/EPS file, not an accepted image format"):
        decode_image(eps)
    assert opened == []  # Pillow's EPS plugin (Ghostscript) was never tried


@pytest.mark.parametrize("fmt", ["GIF", "TIFF"])
def test_animated_and_multi_frame_files_are_refused(fmt):
    frames = [Image.fromarray(_colorful()), Image.fromarray(255 - _colorful())]
    data = _encode(frames[0], fmt, save_all=True, append_images=frames[1:])
    with pytest.raises(BadImage, match="animated or multi-frame"):
        decode_image(data)


def test_any_decoder_failure_is_that_files_reason_not_a_dead_stage(tmp_path, monkeypatch):
    import colorray.data.shards as shards

    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("a.png", "c.png"):
        (photos / name).write_bytes(_encode(Image.fromarray(_colorful()), "PNG"))
    boom = _encode(Image.fromarray(_colorful(50, 30)), "PNG")
    (photos / "boom.png").write_bytes(boom)
    real = shards.decode_image

    def flaky(data, *a, **k):  # a decoder bug that only this file triggers
        if data == boom:
            raise RuntimeError("decoder bug")
        return real(data, *a, **k)

    monkeypatch.setattr(shards, "decode_image", flaky)
    cfg = DataParams(source="folder", path=str(photos), image_size=32, val_fraction=0, test_fraction=0)
    fetch_source(cfg, tmp_path / "raw", tmp_path / "dl")
    manifest = write_shards(cfg, tmp_path / "raw", tmp_path / "shards", workers=1, progress=False)
    assert manifest["kept"] == 2 and len(manifest["dropped"]) == 1
    assert "cannot prepare it (RuntimeError: decoder bug)" in manifest["dropped"][0]["reason"]


def test_the_folder_source_opens_no_fifo_link_or_oversized_file(tmp_path):
    """A FIFO named like a photo (reading it would block forever), a 2 GiB sparse 'photo', a
    video, a link to a file outside the folder and a link loop: none is opened or followed;
    each is named in the manifest's ignored list, and the good photo is sharded."""
    photos = tmp_path / "photos"
    (photos / "album").mkdir(parents=True)
    (photos / "album" / "ok.png").write_bytes(_encode(Image.fromarray(_colorful()), "PNG"))
    os.mkfifo(photos / "pipe.jpg")
    with open(photos / "huge.jpg", "wb") as f:
        f.truncate(2 * 2**30)
    (photos / "clip.mp4").write_bytes(b"\0" * 100)
    secret = tmp_path / "secret.png"
    secret.write_bytes(_encode(Image.fromarray(_colorful()), "PNG"))
    (photos / "outside.png").symlink_to(secret)
    (photos / "album" / "loop").symlink_to(photos)
    cfg = DataParams(source="folder", path=str(photos), image_size=32, val_fraction=0, test_fraction=0)
    fetch_source(cfg, tmp_path / "raw", tmp_path / "dl")
    manifest = write_shards(cfg, tmp_path / "raw", tmp_path / "shards", workers=1, progress=False)
    ignored = dict(line.split(": ", 1) for line in manifest["ignored"])
    assert set(ignored) == {"pipe.jpg", "huge.jpg", "clip.mp4", "outside.png", "album/loop"}
    assert "FIFO" in ignored["pipe.jpg"] and "over the 1,024 MiB limit" in ignored["huge.jpg"]
    assert "symbolic link" in ignored["outside.png"] and "symbolic link" in ignored["album/loop"]
    assert manifest["kept"] == 1 and manifest["inputs"] == 1
    assert sum(1 for _ in (tmp_path / "raw").rglob("*")) < 10  # no tree copied through the loop


def test_fetch_out_never_replaces_a_folder_that_is_not_colorrays(tmp_path):
    from colorray.cli import main

    precious = tmp_path / "data"
    (precious / "downloads").mkdir(parents=True)
    (precious / "downloads" / "big.zip").write_bytes(b"40 GB of downloads")
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "ok.png").write_bytes(_encode(Image.fromarray(_colorful()), "PNG"))
    params = tmp_path / "params.yaml"
    params.write_text(f"data:\n  source: folder\n  path: {photos}\n")
    with pytest.raises(SystemExit) as e:
        main(["fetch", "--params", str(params), "--out", str(precious), "--downloads", str(tmp_path / "dl")])
    assert e.value.code == 2
    assert (precious / "downloads" / "big.zip").read_bytes() == b"40 GB of downloads"
    main(["fetch", "--params", str(params), "--out", str(tmp_path / "raw"), "--downloads", str(tmp_path / "dl")])
    main(["fetch", "--params", str(params), "--out", str(tmp_path / "raw"), "--downloads", str(tmp_path / "dl")])
    with pytest.raises(SystemExit):  # shard --out onto the same folder: refused too
        main(["shard", "--params", str(params), "--raw", str(tmp_path / "raw"), "--out", str(precious)])
    assert (precious / "downloads" / "big.zip").exists()
