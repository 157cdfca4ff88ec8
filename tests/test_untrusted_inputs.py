"""Shards, archives and locations from elsewhere are untrusted input, and what colorray records
keeps no secret: a manifest is checked before any shard is decoded, a shard cannot hold many
images under one key or an oversized member, listing a tar keeps no header per member, every
link of a chained fsspec URL is checked, and credentials in URLs and pipe: commands are
redacted from MLflow params, SOURCE.json, shard manifests and generator files."""
import gzip
import hashlib
import io
import json
import subprocess
import sys
import tarfile
import textwrap

import numpy as np
import pytest
import torch
import webdataset as wds
from PIL import Image

from colorray.config import DataParams, parse_params
from colorray.data import storage
from colorray.data.loader import make_loader
from colorray.data.shards import read_manifest
from colorray.data.sources import fetch_source
from colorray.data.shards import write_shards
from colorray.data.tarstream import ShardFormatError
from colorray.redact import redact
from conftest import ROOT, jpeg_bytes, serve_folder, write_zip


def _shard_folder(tmp_path, skimage_shards, manifest_edit=None, samples=None):
    """A copy of the embedded shards' manifest (edited) and, with `samples`, one train shard
    holding those webdataset samples."""
    m = read_manifest(skimage_shards)
    folder = tmp_path / "served"
    folder.mkdir()
    if samples is not None:
        buf = io.BytesIO()
        with wds.TarWriter(buf, mtime=0) as w:
            for s in samples:
                w.write(s)
        (folder / "train-000000.tar.gz").write_bytes(gzip.compress(buf.getvalue(), mtime=0))
        m["splits"]["train"] = {"count": len(samples), "shards": [{"name": "train-000000.tar.gz",
                                                                   "count": len(samples), "bytes": 0}]}
    if manifest_edit:
        manifest_edit(m)
    (folder / "manifest.json").write_text(json.dumps(m))
    return folder


def _jpg(size: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((size, size, 3), 120, np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


META = json.dumps({"key": "k", "label": "", "source": "", "split": "train"}).encode()


@pytest.mark.parametrize("edit, expected", [
    (lambda m: m.update(image_size=8192), "image_size 8192 is not one of 32, 64, 128, 256"),
    (lambda m: m["splits"]["train"].update(count=10**12), "bad count"),
    (lambda m: m["splits"]["train"].update(count=m["splits"]["train"]["count"] + 1), "its count says"),
    (lambda m: m["splits"].pop("test"), "expected train, val, test"),
    (lambda m: m["splits"]["val"]["shards"][0].update(name="../x.tar.gz"), "needs a plain file name"),
])
def test_a_manifest_from_a_url_is_checked_before_any_shard_is_read(tmp_path, skimage_shards, edit, expected):
    folder = _shard_folder(tmp_path, skimage_shards, edit)
    log = []
    with serve_folder(folder, log) as url:
        with pytest.raises(ShardFormatError, match=expected):
            list(make_loader(url, "train", 16, num_workers=0))
    assert set(log) == {"/manifest.json"}  # refused before any shard was asked for


def test_a_shard_cannot_hold_many_images_under_one_key(tmp_path, skimage_shards):
    size = read_manifest(skimage_shards)["image_size"]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        for name, data in [("train-0.json", META)] + [("train-0.jpg", _jpg(size))] * 3:
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 0
            tf.addfile(info, io.BytesIO(data))
    folder = _shard_folder(tmp_path, skimage_shards, samples=[])
    (folder / "train-000000.tar.gz").write_bytes(gzip.compress(buf.getvalue(), mtime=0))
    m = json.loads((folder / "manifest.json").read_text())
    m["splits"]["train"] = {"count": 1, "shards": [{"name": "train-000000.tar.gz", "count": 1, "bytes": 0}]}
    (folder / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ShardFormatError, match="sample 'train-0' has more than one .jpg member"):
        list(make_loader(folder, "train", 1, num_workers=0, shuffle=False))


def test_an_encoded_shard_member_over_its_cap_is_refused_before_it_is_read(tmp_path, skimage_shards):
    huge = b"\xff\xd8" + bytes(17 << 20)  # 17 MiB "JPEG": no image of 256 px or less is that large
    folder = _shard_folder(tmp_path, skimage_shards,
                           samples=[{"__key__": "train-0", "jpg": huge, "json": META}])
    with pytest.raises(ShardFormatError, match=r"claims 17,825,794 bytes \(over 16,777,216\)"):
        list(make_loader(folder, "train", 1, num_workers=0, shuffle=False))


# The peak RSS of this process's own memory (VmHWM; ru_maxrss would start from the parent's
# peak, the pytest process's, which a forked child inherits).
LISTING = textwrap.dedent("""
    import re, sys
    from colorray.data.archive import UnsafeArchiveError, extract

    def peak():
        return int(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read())[1]) * 1024

    before = peak()
    try:
        extract(sys.argv[1], sys.argv[2], max_bytes=10**9)
    except UnsafeArchiveError as e:
        print("REFUSED", str(e)[-60:])
    print(peak() - before)
""")


def test_listing_a_tar_of_many_members_keeps_no_header_per_member(tmp_path):
    """120,000 empty members (then a link, so the archive is refused after the whole listing):
    keeping every header took ~75 MB here; the listing now grows by what one member needs."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        empty = io.BytesIO(b"")
        for i in range(120_000):
            tf.addfile(tarfile.TarInfo(f"d/{i:06d}"), empty)
        link = tarfile.TarInfo("d/link")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tf.addfile(link)
    archive = tmp_path / "many.tar.gz"
    archive.write_bytes(gzip.compress(raw.getvalue(), compresslevel=1))
    r = subprocess.run([sys.executable, "-c", LISTING, str(archive), str(tmp_path / "out")], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    refused, growth = r.stdout.strip().splitlines()
    print(f"listing growth: {int(growth) / 2**20:.1f} MiB")
    assert refused.startswith("REFUSED") and "is a link; refused" in refused
    assert int(growth) < 24 * 2**20, f"the listing grew RSS by {int(growth) / 2**20:.0f} MiB"
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.extracting").exists()


@pytest.mark.parametrize("url", ["simplecache::http://example.com/shards/",
                                 "filecache::simplecache::http://10.0.0.1/shards/",
                                 "blockcache::ftp://example.com/shards/"])
def test_every_link_of_a_chained_url_is_checked(url):
    with pytest.raises(storage.StorageError, match="is refused except to this machine"):
        storage.location(url)


def test_a_chain_over_https_or_to_this_machine_is_allowed():
    assert storage.location("simplecache::https://example.com/shards") == "simplecache::https://example.com/shards/"
    assert storage.location("simplecache::http://127.0.0.1:8000/s").endswith("/s/")


SECRET = "S3CR3T-value"
PRESIGNED = f"https://bucket.s3.amazonaws.com/tiny.zip?X-Amz-Credential=AKIA&X-Amz-Signature={SECRET}"
PIPE = f"pipe:curl -s -H 'Authorization: Bearer {SECRET}' https://host/shards/{{name}}"


def test_redact_removes_every_kind_of_credential():
    for text in (PRESIGNED, PIPE, f"https://user:{SECRET}@host/x", f"pipe:curl -u bob:{SECRET} https://h/{{name}}",
                 f"pipe:aws s3 cp --token={SECRET} s3://b/{{name}} -", f"pipe:env API_TOKEN={SECRET} get {{name}}"):
        assert SECRET not in redact(text), text
    assert redact("sqlite:///mlflow.db") == "sqlite:///mlflow.db" and redact("s3://b/shards/") == "s3://b/shards/"
    assert redact(PRESIGNED).endswith("X-Amz-Credential=REDACTED&X-Amz-Signature=REDACTED")


def test_credentials_stay_out_of_mlflow_source_json_manifests_and_generator_files(tmp_path):
    from mlflow import MlflowClient

    from colorray.models import build_generator
    from colorray.models.files import save_generator
    from colorray.tracking import log_params

    files = {f"tiny-imagenet-200/train/n01/images/n01_{i}.JPEG": jpeg_bytes(i) for i in range(4)}
    files["tiny-imagenet-200/val/images/val_0.JPEG"] = jpeg_bytes(9)
    (tmp_path / "site").mkdir()
    archive = write_zip(tmp_path / "site" / "tiny.zip", files)
    sha = hashlib.sha256(archive.read_bytes()).hexdigest()
    with serve_folder(tmp_path / "site") as base:
        url = f"{base}tiny.zip?X-Amz-Signature={SECRET}"
        cfg = DataParams(source="tiny-imagenet", url=url, sha256=sha, image_size=32)
        fetch_source(cfg, tmp_path / "raw", tmp_path / "dl")
    write_shards(cfg, tmp_path / "raw", tmp_path / "shards", workers=1, progress=False)
    for written in (tmp_path / "raw" / "SOURCE.json", tmp_path / "shards" / "manifest.json"):
        text = written.read_text()
        assert SECRET not in text and "X-Amz-Signature=REDACTED" in text, written

    params = parse_params({"data": {"url": url, "shards_url": PIPE}})
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.create_run(client.create_experiment("t"))
    log_params(client, run.info.run_id, params)
    logged = client.get_run(run.info.run_id).data.params
    assert SECRET not in json.dumps(logged) and logged["data.shards_url"].startswith("pipe:curl -s -H 'Authorization:")

    save_generator(build_generator(params), params, 0, tmp_path / "g.pt")
    assert SECRET not in json.dumps(torch.load(tmp_path / "g.pt", weights_only=True)["params"])
