"""The shard stage: determinism, atomic writes, and a run killed halfway."""
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time

import numpy as np
import pytest
import yaml
from PIL import Image

from colorray.config import DataParams
from colorray.data.shards import read_manifest, write_shards

from conftest import ROOT


def _check_tar_complete(path, size=None):
    """Every record of a finished shard decodes with the standard tarfile module: an image and
    its metadata (encoded shards) or an (n, S, S, 3) uint8 chunk with n keys (raw)."""
    records = {}
    with tarfile.open(path) as tf:  # any compression
        for m in tf.getmembers():
            key, ext = m.name.split(".", 1)
            records.setdefault(key, {})[ext] = tf.extractfile(m).read()
    for rec in records.values():
        meta = json.loads(rec["json"])
        if "npy" in rec:
            images = np.load(io.BytesIO(rec["npy"]))
            assert images.dtype == np.uint8 and images.ndim == 4 and len(images) == len(meta["keys"])
        else:
            (ext,) = set(rec) - {"json"}
            with Image.open(io.BytesIO(rec[ext])) as img:
                assert img.mode == "RGB" and (size is None or img.size == (size, size))
            assert set(meta) == {"key", "label", "source", "split"}
    return len(records)


def test_manifest_accounts_for_every_input_and_matches_the_tars(skimage_shards):
    m = read_manifest(skimage_shards)
    assert m["inputs"] == m["kept"] + len(m["dropped"]) + m["outside_subset"]
    assert m["format"] == {"encoding": "jpeg", "compression": "gzip", "jpeg_quality": 95}
    for split in m["splits"].values():
        for sh in split["shards"]:
            assert sh["name"].endswith(".tar.gz")
            assert _check_tar_complete(skimage_shards / sh["name"], m["image_size"]) == sh["count"]
            assert (skimage_shards / sh["name"]).stat().st_size == sh["bytes"]
    assert sorted(p.name for p in skimage_shards.iterdir()) == sorted(
        [sh["name"] for s in m["splits"].values() for sh in s["shards"]] + ["manifest.json", ".colorray-output"])


def test_raw_shards_hold_chunks(tmp_path, skimage_shards):
    m = write_shards(DataParams(encoding="raw", compression="none", chunk_size=16), skimage_shards.parent / "raw",
                     tmp_path / "raw", progress=False)
    for split in m["splits"].values():
        for sh in split["shards"]:
            assert _check_tar_complete(tmp_path / "raw" / sh["name"]) == len(sh["chunks"])
            assert sum(sh["chunks"]) == sh["count"] and max(sh["chunks"]) <= 16


def test_shard_size_is_bounded(tmp_path, skimage_shards):
    raw = skimage_shards.parent / "raw"
    # a third of the photos (data.subset_fraction): still dozens of shards of each kind
    for cfg in (DataParams(shard_max_mb=0.05, compression="none", subset_fraction=0.3),
                DataParams(shard_max_mb=0.5, encoding="raw", chunk_size=8, subset_fraction=0.3)):
        m = write_shards(cfg, raw, tmp_path / cfg.encoding, progress=False)
        sizes = [sh["bytes"] for s in m["splits"].values() for sh in s["shards"]]
        assert len(sizes) > 10 and max(sizes) <= cfg.shard_max_mb * 2**20, cfg.encoding


def _run_shard(params_file, raw, out):
    return subprocess.Popen(
        [sys.executable, "-m", "colorray.cli", "shard", "--params", str(params_file), "--raw", str(raw),
         "--out", str(out), "--workers", "1"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)


@pytest.mark.slow
def test_shard_stage_killed_halfway_leaves_only_complete_shards_and_reruns_identically(tmp_path, skimage_shards):
    raw = skimage_shards.parent / "raw"
    params = tmp_path / "params.yaml"
    # half of the photos (data.subset_fraction), in dozens of shards: a kill lands mid-run
    params.write_text(yaml.safe_dump({"data": {"image_size": 128, "shard_max_mb": 0.4, "chunk_size": 4,
                                               "subset_fraction": 0.5}}))

    # Reference: an uninterrupted run.
    ref = _run_shard(params, raw, tmp_path / "ref")
    assert ref.wait(timeout=300) == 0, ref.stderr.read().decode()

    out = tmp_path / "out"
    stage = tmp_path / "out.partial"
    proc = _run_shard(params, raw, out)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(stage.glob("*.tar.gz"))) < 5:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = list(stage.glob("*.tar.gz"))
    assert len(finished) >= 5, "the run finished or stalled before it could be killed halfway"
    assert not out.exists()  # the output folder never exists half-written
    for tar in finished:  # every shard under its final name is complete
        _check_tar_complete(tar)
    # besides them: temp files, and the marker that makes the staging folder colorray's
    assert all(p.name.endswith(".tmp") or p.name == ".colorray-output"
               for p in stage.iterdir() if not p.name.endswith(".tar.gz"))

    rerun = _run_shard(params, raw, out)
    assert rerun.wait(timeout=300) == 0, rerun.stderr.read().decode()
    assert not stage.exists()
    ref_files = sorted(p.name for p in (tmp_path / "ref").iterdir())
    assert sorted(p.name for p in out.iterdir()) == ref_files
    for name in ref_files:
        assert (out / name).read_bytes() == (tmp_path / "ref" / name).read_bytes(), name


def test_sharding_is_deterministic_and_parallel_equals_serial(tmp_path, skimage_shards):
    raw = skimage_shards.parent / "raw"
    cfg = DataParams(image_size=32)
    write_shards(cfg, raw, tmp_path / "a", workers=1, progress=False)
    write_shards(cfg, raw, tmp_path / "b", workers=2, progress=False)
    for p in (tmp_path / "a").iterdir():
        assert p.read_bytes() == (tmp_path / "b" / p.name).read_bytes(), p.name


def test_rerun_replaces_an_existing_output_completely(tmp_path, skimage_shards):
    raw = skimage_shards.parent / "raw"
    out = tmp_path / "shards"
    write_shards(DataParams(image_size=32, shard_max_mb=0.2), raw, out, progress=False)
    many = len(list(out.glob("*.tar.gz")))
    write_shards(DataParams(image_size=32), raw, out, progress=False)
    assert len(list(out.glob("*.tar.gz"))) < many  # no stale shard of the old run remains
    assert read_manifest(out)["params"]["shard_max_mb"] == 16.0


def test_missing_raw_folder_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="run the fetch stage"):
        write_shards(DataParams(), tmp_path / "raw", tmp_path / "out", progress=False)


def test_cli_reports_bad_params_without_a_traceback(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("data:\n  image_size: 100\n")
    r = subprocess.run([sys.executable, "-m", "colorray.cli", "shard", "--params", str(params)],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2
    assert "data.image_size" in r.stderr and "Traceback" not in r.stderr


def test_a_swap_killed_between_its_renames_is_finished_by_the_next_run(tmp_path, skimage_shards, monkeypatch):
    """Killed after shards -> shards.old and before shards.partial -> shards: data/shards is
    missing. The next run puts the previous version back before anything else, then replaces it;
    no shards.old is left behind."""
    import colorray.atomic as atomic

    raw = skimage_shards.parent / "raw"
    out = tmp_path / "shards"
    write_shards(DataParams(image_size=32), raw, out, progress=False)
    before = read_manifest(out)
    real_replace = os.replace

    def killed_after_the_first_rename(src, dst):
        real_replace(src, dst)
        if str(dst).endswith(".old"):
            raise KeyboardInterrupt  # the process dies here

    monkeypatch.setattr(atomic.os, "replace", killed_after_the_first_rename)
    with pytest.raises(KeyboardInterrupt):
        write_shards(DataParams(image_size=32, shard_max_mb=0.2), raw, out, progress=False)
    monkeypatch.undo()
    assert not out.exists() and (tmp_path / "shards.old").exists()
    atomic.recover_dir(out, "shards")  # what every stage does first
    assert read_manifest(out) == before and not (tmp_path / "shards.old").exists()
    write_shards(DataParams(image_size=32, shard_max_mb=0.2), raw, out, progress=False)
    assert read_manifest(out)["params"]["shard_max_mb"] == 0.2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shards"]


def _dies_on_coffee(chunk):
    """A decoding worker that the kernel kills (for memory) on the chunk with the coffee photo."""
    from colorray.data.shards import _prepare_task

    if any("coffee" in item.path for item, *_ in chunk):
        os._exit(137)
    return [_prepare_task(args) for args in chunk]


def test_a_decoding_worker_killed_for_memory_stops_the_stage_with_its_files_not_a_hang(tmp_path, skimage_shards,
                                                                                      monkeypatch):
    """Pool.imap waited forever for a worker the kernel had killed; now the stage stops with a
    named error (the files that worker held), and the output folder is untouched."""
    import colorray.data.shards as shards

    monkeypatch.setattr(shards, "_prepare_chunk", _dies_on_coffee)
    with pytest.raises(RuntimeError, match="a decoding process died .* on one of: .*coffee"):
        write_shards(DataParams(image_size=32), skimage_shards.parent / "raw", tmp_path / "out", workers=2,
                     progress=False)
    assert not (tmp_path / "out").exists()
