"""Standard webdataset shards: any webdataset reader opens them, raw shards convert without
the sources, and every stage reads them from a folder or a URL (HTTP, pipe:)."""
import gzip
import io
import json
import subprocess
import sys
import tarfile

import numpy as np
import pytest
import webdataset as wds

from colorray.config import DataParams
from colorray.data import storage
from colorray.data.loader import load_split, make_loader
from colorray.data.shards import convert_shards, read_manifest, write_shards
from colorray.data.tarstream import ShardFormatError

from conftest import ROOT, serve_folder

SIZE = 32  # small images and a quarter of the crops: the tests read every sample several times
SUBSET = 0.25
JPEG_MEAN_ERROR = 2.0  # mean |difference| in 8-bit levels, JPEG q95 4:4:4 against the pixels it encoded


@pytest.fixture(scope="module")
def raw_shards(tmp_path_factory, skimage_shards):
    """The embedded photos as raw shards (the pixels every encoding is checked against)."""
    out = tmp_path_factory.mktemp("raw") / "shards"
    write_shards(DataParams(image_size=SIZE, subset_fraction=SUBSET, encoding="raw", compression="none", chunk_size=16),
                 skimage_shards.parent / "raw", out, progress=False)
    return out


def _by_key(shards):
    """{key: (image, label, split)} of every split, as colorray's loader yields them."""
    out = {}
    for split in ("train", "val", "test"):
        rgb, keys, labels = load_split(shards, split)
        out.update({k: (img, lab, split) for img, k, lab in zip(rgb.numpy(), keys, labels)})
    return out


@pytest.mark.parametrize("encoding,compression", [("jpeg", "gzip"), ("webp", "none"), ("png", "gzip")])
def test_a_plain_webdataset_pipeline_reads_every_sample_as_colorray_does(tmp_path, skimage_shards, raw_shards,
                                                                           encoding, compression):
    out = tmp_path / "shards"
    m = write_shards(DataParams(image_size=SIZE, subset_fraction=SUBSET, encoding=encoding, compression=compression),
                     skimage_shards.parent / "raw", out, progress=False)
    urls = [str(out / sh["name"]) for s in m["splits"].values() for sh in s["shards"]]

    # Written without colorray: webdataset's own tar reading and PIL decoding.
    ext = {"jpeg": "jpg", "webp": "webp", "png": "png"}[encoding]
    plain = {}
    for sample in wds.WebDataset(urls, shardshuffle=False).decode("rgb8"):
        meta = sample["json"]
        assert meta["key"] not in plain
        plain[meta["key"]] = (sample[ext], meta["label"], meta["split"])
    ours, truth = _by_key(out), _by_key(raw_shards)
    assert len(plain) == m["kept"] == len(ours) == len(truth)
    assert {k: v[1:] for k, v in plain.items()} == {k: v[1:] for k, v in ours.items()} \
        == {k: v[1:] for k, v in truth.items()}  # labels and splits
    errors = []
    for key, (img, _, _) in plain.items():
        assert img.shape == (SIZE, SIZE, 3) and img.dtype == np.uint8
        # The same bytes through PIL (webdataset) and through colorray's decoder: identical
        # (both libjpeg-turbo for JPEG; a decoder with another IDCT could differ by a level).
        assert np.array_equal(img, ours[key][0]), key
        errors.append(np.abs(img.astype(int) - truth[key][0]).mean())
    if encoding == "jpeg":
        assert 0 < np.mean(errors) < JPEG_MEAN_ERROR, np.mean(errors)
    else:
        assert max(errors) == 0  # lossless: bit-exact with the source pixels


def test_raw_shards_convert_to_the_same_tars_as_sharding_the_sources(tmp_path, skimage_shards, raw_shards):
    direct = write_shards(DataParams(image_size=SIZE, subset_fraction=SUBSET), skimage_shards.parent / "raw",
                          tmp_path / "direct", progress=False)
    r = subprocess.run([sys.executable, "-m", "colorray.cli", "shard", "--from", str(raw_shards),
                        "--encoding", "jpeg", "--out", str(tmp_path / "converted")],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "jpeg in gzipped tars" in r.stdout
    converted = read_manifest(tmp_path / "converted")
    assert converted["splits"] == direct["splits"] and converted["format"] == direct["format"]
    for s in direct["splits"].values():
        for sh in s["shards"]:
            assert (tmp_path / "converted" / sh["name"]).read_bytes() == (tmp_path / "direct" / sh["name"]).read_bytes()
    assert converted["converted_from"]["location"] == str(raw_shards)
    assert converted["inputs"] == direct["inputs"] and converted["params"]["encoding"] == "jpeg"

    with pytest.raises(ValueError, match="only raw shards convert"):
        convert_shards(tmp_path / "direct", tmp_path / "again", DataParams(encoding="png"))


def test_the_loader_streams_the_same_batches_over_http_and_through_a_pipe(skimage_shards):
    local = [b["key"] for b in make_loader(skimage_shards, "train", 16, num_workers=2, seed=3)]
    log = []
    with serve_folder(skimage_shards, log) as url:
        assert read_manifest(url) == read_manifest(skimage_shards)
        over_http = [b["key"] for b in make_loader(url, "train", 16, num_workers=2, seed=3)]
    assert over_http == local
    assert any(p.endswith(".tar.gz") for p in log)  # the shards really came over HTTP
    piped = make_loader(f"pipe:cat {skimage_shards}/{{name}}", "train", 16, num_workers=0, seed=3)
    assert [b["key"] for b in piped] == [b["key"] for b in make_loader(skimage_shards, "train", 16, num_workers=0,
                                                                       seed=3)]


def test_locations_that_are_refused(skimage_shards):
    with pytest.raises(storage.StorageError, match="plain http is refused"):
        storage.location("http://example.com/shards/")
    with pytest.raises(storage.StorageError, match=r"needs \{name\}"):
        storage.location("pipe:cat shards.tar")
    for name in ("../secret", "a/b.tar", "", ".hidden"):
        with pytest.raises(storage.StorageError, match="not a plain file name"):
            storage.file_url("https://host/shards/", name)
    with pytest.raises(FileNotFoundError, match="no manifest; run the shard stage"):
        read_manifest(skimage_shards.parent / "nothing-here")


def test_a_hostile_manifest_cannot_name_a_file_outside_the_shards(tmp_path, skimage_shards):
    shards = tmp_path / "shards"
    shards.mkdir()
    m = read_manifest(skimage_shards)
    m["splits"]["train"]["shards"][0]["name"] = "../../etc/passwd"
    (shards / "manifest.json").write_text(json.dumps(m))
    with serve_folder(shards) as url:  # refused when the manifest is read, before any file is opened
        with pytest.raises(ShardFormatError, match="'../../etc/passwd'} needs a plain file name"):
            list(make_loader(url, "train", 16, num_workers=0))
    m["splits"]["train"]["shards"][0]["name"] = "train-000000.tar.gz"
    m["format"] = {"encoding": "exe", "compression": "none", "jpeg_quality": None}
    (shards / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ShardFormatError, match="unknown encoding or compression"):
        list(make_loader(shards, "train", 16, num_workers=0))


def _one_shard(skimage_shards):
    m = read_manifest(skimage_shards)
    return m, m["splits"]["train"]["shards"][0]["name"]


@pytest.mark.parametrize("damage", ["truncated", "pax", "corrupt-gzip", "oversized-image"])
def test_damaged_shards_are_named_with_what_is_wrong(tmp_path, skimage_shards, damage):
    m, name = _one_shard(skimage_shards)
    data = gzip.decompress((skimage_shards / name).read_bytes())
    if damage == "truncated":
        data, expected = data[:len(data) // 2], "ends .*early|without the end-of-archive marker"
    elif damage == "pax":  # what tarfile writes for a float mtime, or GNU tar for long names
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
            ti = tarfile.TarInfo("train-00000000.jpg")
            ti.mtime, ti.size = 0.5, 3
            tf.addfile(ti, io.BytesIO(b"abc"))
        data, expected = buf.getvalue(), "not a USTAR header|not a regular file"
    elif damage == "corrupt-gzip":
        expected = "BadGzipFile|Error"
    else:  # a 9000x9000 JPEG header where the manifest says 64x64: refused before decoding
        from PIL import Image

        big = io.BytesIO()
        Image.new("RGB", (9000, 9000)).save(big, "JPEG")
        buf = io.BytesIO()
        with wds.TarWriter(buf, mtime=0) as w:
            w.write({"__key__": "train-00000000", "jpg": big.getvalue(),
                     "json": json.dumps({"key": "k", "label": "", "source": "", "split": "train"}).encode()})
        data, expected = buf.getvalue(), "a 9000x9000 image where the manifest says 64x64"
    shards = tmp_path / "shards"
    shards.mkdir()
    (shards / "manifest.json").write_text(json.dumps(m))
    blob = gzip.compress(data, mtime=0)
    (shards / name).write_bytes(blob[:100] + bytes(50) + blob[150:] if damage == "corrupt-gzip" else blob)
    with pytest.raises((ShardFormatError, RuntimeError), match=expected) as err:
        list(make_loader(shards, "train", 16, num_workers=0, shuffle=False))
    assert name in str(err.value)


def test_a_shards_url_must_hold_the_shards_dvc_tracks(tmp_path, skimage_shards, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    other = tmp_path / "elsewhere"
    write_shards(DataParams(image_size=SIZE, subset_fraction=SUBSET), skimage_shards.parent / "raw", other,
                 progress=False)
    (tmp_path / "data" / "shards").symlink_to(skimage_shards)
    with serve_folder(skimage_shards) as same, serve_folder(other) as different:
        assert storage.stage_shards(None, same) == same
        with pytest.raises(storage.StorageError, match="differs from data/shards/manifest.json"):
            storage.stage_shards(None, different)
        assert storage.stage_shards(str(other), different) == str(other)  # --shards: the user's choice
    assert storage.stage_shards(None, None) == str(skimage_shards.resolve())  # data/shards, absolute
    with pytest.raises(storage.StorageError, match="data.shards_url: .*plain http is refused"):
        storage.stage_shards(None, "http://10.0.0.1/shards/")
