"""The DVC DAG end to end, on a copy of this project in a fresh git repository."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, TINY_IMAGENET_MINI, TINY_IMAGENET_MINI_SHA256, needs_tiny_imagenet

pytestmark = pytest.mark.slow


def _sh(cmd, cwd, env):
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"{cmd} failed:\n{r.stdout}\n{r.stderr}"
    return r.stdout + r.stderr


@pytest.fixture
def project(tmp_path):
    """What a fresh clone holds (tracked and not-ignored files), committed in a new repo."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                           cwd=ROOT, capture_output=True, text=True, check=True).stdout.split("\0")
    dest = tmp_path / "project"
    for f in filter(None, files):
        if (ROOT / f).is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, dest / f)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "clone"]):
        _sh(cmd, dest, env)
    return dest, env


def _set_param(project_dir, key, value):
    p = project_dir / "params.yaml"
    params = yaml.safe_load(p.read_text())
    section, name = key.split(".")
    params[section][name] = value
    p.write_text(yaml.safe_dump(params, sort_keys=False))


def test_repro_then_noop_then_only_the_affected_stage(project):
    proj, env = project
    out = _sh(["dvc", "repro"], proj, env)
    assert "Running stage 'fetch'" in out and "Running stage 'shard'" in out
    manifest = json.loads((proj / "data/shards/manifest.json").read_text())
    assert manifest["source"] == "skimage" and manifest["kept"] > 3000

    out = _sh(["dvc", "repro"], proj, env)
    assert "Running stage" not in out and "up to date" in out

    _set_param(proj, "data.image_size", 32)
    out = _sh(["dvc", "repro"], proj, env)
    assert "Stage 'fetch' didn't change, skipping" in out
    assert "Running stage 'shard'" in out
    assert json.loads((proj / "data/shards/manifest.json").read_text())["image_size"] == 32


@needs_tiny_imagenet
def test_dvc_exp_run_switches_to_tiny_imagenet_from_a_file_url(project):
    proj, env = project
    _sh(["dvc", "exp", "run", "-S", "data.source=tiny-imagenet",
         "-S", f"data.url={TINY_IMAGENET_MINI.as_uri()}",
         "-S", f"data.sha256={TINY_IMAGENET_MINI_SHA256}"], proj, env)
    m = json.loads((proj / "data/shards/manifest.json").read_text())
    assert m["source"] == "tiny-imagenet"
    assert m["inputs"] >= 20_000 and m["kept"] + len(m["dropped"]) == m["inputs"]
    assert m["provenance"]["files"][0]["verified"] is True
