"""Nothing of the user's is ever lost: colorray replaces or deletes a folder (an output, its
`.old` copy, its `.partial`/`.fetching` staging folder) only when it carries colorray's
ownership marker, and checks that before anything is touched. The reproductions run the
`colorray` command as a user does; the property test drives the folder rules with arbitrary
trees beside and inside the output."""
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from colorray.atomic import OWNER_MARKER, is_owned, mark_owned, replace_dir, staging_dir
from conftest import ROOT


def _snapshot(folder: Path) -> dict:
    """Every file and link under `folder` (including `folder` itself if it is one) -> its content hash."""
    if folder.is_symlink() or folder.is_file():
        return {".": os.readlink(folder) if folder.is_symlink() else hashlib.sha256(folder.read_bytes()).hexdigest()}
    out = {}
    for top, dirs, files in os.walk(folder):
        for name in dirs + files:
            p = Path(top) / name
            rel = str(p.relative_to(folder))
            if p.is_symlink():
                out[rel] = "->" + os.readlink(p)
            elif p.is_file():
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
            else:
                out[rel] = "dir"
    return out


def _eight_gib_address_space():
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (8 * 2**30, 8 * 2**30))


def _colorray(*args, cwd):
    """The command as a user runs it, under an 8 GiB address-space cap; it must answer within a
    minute (a refusal takes seconds: the imports)."""
    if not (Path(cwd) / "params.yaml").exists():
        (Path(cwd) / "params.yaml").write_text("data:\n  source: skimage\n")
    return subprocess.run([sys.executable, "-m", "colorray.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60, preexec_fn=_eight_gib_address_space)


def _user_folder(path: Path, files: dict) -> dict:
    for rel, text in files.items():
        (path / rel).parent.mkdir(parents=True, exist_ok=True)
        (path / rel).write_text(text)
    return _snapshot(path)


def test_shard_refuses_a_user_folder_and_leaves_its_old_sibling_in_place(tmp_path, skimage_shards):
    """`colorray shard --out photos` where photos/ is the user's and photos.old/ their backup."""
    photos = _user_folder(tmp_path / "photos", {"a.jpg": "my photo"})
    backup = _user_folder(tmp_path / "photos.old", {"a.jpg": "my backup", "notes.txt": "keep"})
    partial = _user_folder(tmp_path / "photos.partial", {"draft.txt": "mine too"})
    r = _colorray("shard", "--raw", str(skimage_shards.parent / "raw"), "--out", "photos", cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert "photos: exists and is not a colorray shards folder" in r.stderr and "refusing" in r.stderr
    assert _snapshot(tmp_path / "photos") == photos
    assert _snapshot(tmp_path / "photos.old") == backup
    assert _snapshot(tmp_path / "photos.partial") == partial


def test_shard_refuses_a_folder_with_a_foreign_manifest_json(tmp_path, skimage_shards):
    """A web app's manifest.json does not make a folder colorray's."""
    webapp = _user_folder(tmp_path / "webapp", {"manifest.json": json.dumps({"name": "My PWA", "version": 2}),
                                                 "src/app.js": "console.log('hi')"})
    r = _colorray("shard", "--raw", str(skimage_shards.parent / "raw"), "--out", "webapp", cwd=tmp_path)
    assert r.returncode == 2 and "webapp: exists and is not a colorray shards folder" in r.stderr, r.stderr
    assert "manifest.json" in r.stderr  # the message names what it found there
    assert _snapshot(tmp_path / "webapp") == webapp
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml", "webapp"]  # no staging folder either


def test_fetch_refuses_a_user_old_folder_beside_its_output(tmp_path):
    """The fetch stage's swap: a data/raw.old that is not colorray's stops it before anything moves."""
    backup = _user_folder(tmp_path / "data/raw.old", {"SOURCE.json": "{}", "precious.txt": "x"})
    r = _colorray("fetch", cwd=tmp_path)
    assert r.returncode == 2 and "raw.old: beside the output, is not a colorray raw folder" in r.stderr, r.stderr
    assert _snapshot(tmp_path / "data/raw.old") == backup and not (tmp_path / "data/raw").exists()


def test_a_forged_or_linked_marker_is_not_ownership(tmp_path):
    forged = tmp_path / "forged"
    forged.mkdir()
    (forged / OWNER_MARKER).write_text("yes this is colorray's")
    assert not is_owned(forged, "shards")
    other_kind = tmp_path / "raw"
    other_kind.mkdir()
    mark_owned(other_kind, "raw")
    assert is_owned(other_kind, "raw") and not is_owned(other_kind, "shards")
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / OWNER_MARKER).symlink_to(other_kind / OWNER_MARKER)
    assert not is_owned(linked, "raw")
    link_to_owned = tmp_path / "link"
    link_to_owned.symlink_to(other_kind)
    assert not is_owned(link_to_owned, "raw")


# ---- the rules, for arbitrary states of the output and the folders beside it -------------------

KIND = "shards"
STATES = ["absent", "empty", "user", "user-with-manifest", "forged-marker", "other-kind", "owned", "file", "link"]


def _make(path: Path, state: str, outside: Path) -> None:
    if state == "absent":
        return
    if state == "file":
        path.write_text("a user's file")
    elif state == "link":
        path.symlink_to(outside, target_is_directory=True)
    else:
        path.mkdir()
        if state == "user":
            (path / "photo.jpg").write_text("user data")
        elif state == "user-with-manifest":
            (path / "manifest.json").write_text('{"splits": {}}')
            (path / "index.html").write_text("<html>")
        elif state == "forged-marker":
            (path / OWNER_MARKER).write_text('{"format": "something-else", "kind": "shards"}')
            (path / "data.bin").write_text("user data")
        elif state == "other-kind":
            mark_owned(path, "raw")
            (path / "SOURCE.json").write_text("{}")
        elif state == "owned":
            mark_owned(path, KIND)
            (path / "train-000000.tar.gz").write_text("old shards")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(target=st.sampled_from(STATES), old=st.sampled_from(STATES), partial=st.sampled_from(STATES))
def test_nothing_that_is_not_colorrays_is_touched_whatever_lies_beside_the_output(tmp_path_factory, target, old,
                                                                                   partial):
    base = tmp_path_factory.mktemp("own")
    outside = base / "outside"
    _user_folder(outside, {"keep.txt": "outside the tree"})
    paths = {"target": base / "out", "old": base / "out.old", "partial": base / "out.partial"}
    states = {"target": target, "old": old, "partial": partial}
    for name, state in states.items():
        _make(paths[name], state, outside)
    foreign = {name: _snapshot(paths[name]) for name, state in states.items()
               if state not in ("absent", "owned") and not (name == "target" and state == "empty")}
    outside_before = _snapshot(outside)

    try:
        stage = staging_dir(paths["target"], ".partial", KIND)
        (stage / "train-000000.tar.gz").write_text("new shards")
        replace_dir(stage, paths["target"], KIND)
        published = True
    except FileExistsError as e:
        published = False
        assert "refusing" in str(e) or "not a folder" in str(e)

    for name, snap in foreign.items():  # every folder or file that is not colorray's: as it was
        assert _snapshot(paths[name]) == snap, (name, states)
    assert _snapshot(outside) == outside_before
    if published:
        assert is_owned(paths["target"], KIND)
        assert (paths["target"] / "train-000000.tar.gz").read_text() == "new shards"
        assert not paths["partial"].exists() and not paths["old"].exists()  # ours, cleaned up
    # Publishing is refused exactly when something in the way is not colorray's.
    in_the_way = [n for n, s in states.items() if s not in ("absent", "owned") and not (n == "target" and s == "empty")]
    assert published == (not in_the_way), states


def test_the_clean_clone_benchmark_replaces_only_a_clone_it_made(tmp_path):
    """benchmarks/clean_clone.sh removes its previous clone before cloning again: a folder of
    that name that it did not make (no marker in its .git) is refused, untouched."""
    user = tmp_path / "colorray-clean-clone"
    (user / ".git").mkdir(parents=True)
    (user / "notes.txt").write_text("mine")
    before = _snapshot(user)
    r = subprocess.run(["bash", str(ROOT / "benchmarks" / "clean_clone.sh"), "test"], capture_output=True,
                       text=True, timeout=60, env={**os.environ, "CLONE": str(user)})
    assert r.returncode == 1 and f"{user} exists and this script did not make it" in r.stderr
    assert _snapshot(user) == before
