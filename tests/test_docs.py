"""The documentation: the site builds strictly (no broken link, no missing page), the generated
reference describes every parameter, flag, metric and preset, the README stays a doorway, and
the examples that a user can run on one machine run as written.

Examples are fenced ```sh / ```python blocks of README.md and docs/tutorials/. Each one is
marked by the HTML comment before it: `<!-- test: run -->` (run here, in a temp folder with a
fresh HOME, a copy of params.yaml, a tiny generator in models/generator.pt and a few photos in
photos/) or `<!-- test: skip (why) -->` (a cluster, a GPU, the cloud, or minutes of training).
The README's cluster block is run by tests/test_readme_cluster.py."""
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT

DOCS = ROOT / "docs"
EXAMPLE_PAGES = [ROOT / "README.md", *sorted((DOCS / "tutorials").glob("*.md"))]
FENCE = re.compile(r"^```(\w+)[^\n]*\n(.*?)^```\s*$", re.S | re.M)
MARK = re.compile(r"<!--\s*(test:\s*run|test:\s*skip\s*\((?P<why>[^)]+)\)|cluster-commands:[^>]*)\s*-->\s*$")
ISSUE = re.compile(r"issue [0-9]", re.I)


def _hooks():
    spec = importlib.util.spec_from_file_location("colorray_docs_hooks", DOCS / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def examples(page: Path) -> list[tuple[str, str, str]]:
    """(language, code, mark) of every fenced block of a page; mark is "run", "skip", "cluster"
    or "" (unmarked), from the line just before the fence."""
    text = page.read_text()
    out = []
    for m in FENCE.finditer(text):
        before = text[:m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        mark = MARK.search(before)
        kind = "" if not mark else mark.group(1).split(":")[0] if mark.group(1).startswith("cluster") \
            else mark.group(1).split(":")[1].split("(")[0].strip()
        kind = {"cluster-commands": "cluster"}.get(kind, kind)
        out.append((m.group(1), m.group(2), kind))
    return out


def runnable() -> list:
    """The blocks to run, each text once (the README's quick start repeats a tutorial's step)."""
    seen, out = set(), []
    for page in EXAMPLE_PAGES:
        for i, (lang, code, kind) in enumerate(examples(page)):
            if kind == "run" and code not in seen:
                seen.add(code)
                out.append(pytest.param(lang, code, id=f"{page.relative_to(ROOT)}:{i}"))
    return out


RUNNABLE = runnable()


def test_the_site_builds_strictly(tmp_path, caplog):
    """A broken link, a missing page, a page left out of the nav or a reference entry without a
    description fails `mkdocs build --strict`. The site goes to a temp folder. (In this
    process: torch and colorray, which the reference hook imports, are loaded already.)"""
    from mkdocs.commands.build import build
    from mkdocs.config import load_config

    config = load_config(str(ROOT / "mkdocs.yml"), site_dir=str(tmp_path / "site"), strict=True)
    try:
        build(config)
    except BaseException as e:  # mkdocs' Abort is a SystemExit: the warnings are in the log
        pytest.fail(f"mkdocs build --strict: {e}\n{caplog.text[-4000:]}")
    for page in ("reference/params", "reference/cli", "reference/metrics", "reference/presets"):
        assert (tmp_path / "site" / page / "index.html").is_file(), page


def test_every_param_flag_metric_and_preset_is_described():
    from colorray.cli import build_parser
    from colorray.config import Params
    from colorray.metrics.registry import METRICS
    from colorray.presets import PRESETS

    hooks = _hooks()
    assert hooks.missing_descriptions() == []
    # ... and the generated pages cover the code, entry by entry.
    keys = {r["key"] for r in hooks.param_rows()}
    for section, field in Params.model_fields.items():
        fields = getattr(field.annotation, "model_fields", None)
        assert (section in keys) if fields is None else {f"{section}.{k}" for k in fields} <= keys
    flags = {(r["command"], r["flag"].split(" {")[0]) for r in hooks.cli_rows()}
    for name, _, sub in hooks._subcommands(build_parser()):
        assert (name, "") in flags
        for action in sub._actions:
            if action.help != "==SUPPRESS==" and action.dest != "help":
                assert action.help, f"colorray {name} {action.option_strings}: no help"
                assert (name, ", ".join(action.option_strings) or action.dest) in flags
    assert {r["name"] for r in hooks.metric_rows()} == set(METRICS)
    assert {r["name"] for r in hooks.preset_rows()} == set(PRESETS)
    params = hooks.params_page()
    assert all(f"`{k}`" in params for k in keys)


def test_the_comment_parser_reads_continuations_and_drops_the_default_brackets(tmp_path):
    hooks = _hooks()
    f = tmp_path / "params.yaml"
    f.write_text("# the data\ndata:\n  a: 1   # first\n       # and more\n  b: 2  # [[x, y], ...] pairs\n"
                 "  c:\n    - x\ngan:\n  d: null  # dee [[0.5, 0.999]; wgan-gp [0, 0.9]]\nx: 2  # top\n")
    keys, sections = hooks.param_comments(f)
    assert keys == {"data.a": "first and more", "data.b": "[[x, y], ...] pairs", "data.c": "", "gan.d": "dee",
                    "x": "top"}
    assert sections == {"data": "the data"}


def test_the_readme_is_a_doorway_and_no_page_tells_build_history():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    assert readme.lstrip().startswith("# colorray")
    assert "make run" in readme and "make test" in readme
    pages = [ROOT / "README.md", *DOCS.rglob("*.md")]
    found = [f"{p.relative_to(ROOT)}: {m.group(0)}" for p in pages for m in ISSUE.finditer(p.read_text())]
    assert found == []


def test_the_readmes_links_and_pictures_exist():
    """README.md is read on the forge, outside the site: its relative links must hold too."""
    readme = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", readme)
    assert targets
    missing = [t for t in targets if "://" not in t and not (ROOT / t).exists()]
    assert missing == []


def test_every_example_is_marked_run_or_skip_with_a_reason():
    for page in EXAMPLE_PAGES:
        for lang, code, kind in examples(page):
            if lang in ("sh", "bash", "console", "python"):
                assert kind, f"{page.relative_to(ROOT)}: a {lang} block without <!-- test: run --> or " \
                             f"<!-- test: skip (why) -->:\n{code[:200]}"
    assert RUNNABLE, "no example is run"


def test_the_tutorials_cluster_commands_are_the_readmes():
    """The sweep tutorial repeats the README's cluster block (run by test_readme_cluster.py):
    the two must not drift apart."""
    cluster = [code for _, code, kind in examples(ROOT / "README.md") if kind == "cluster"]
    assert len(cluster) == 1
    tutorial = (DOCS / "tutorials" / "sweep-on-a-cluster.md").read_text()
    assert cluster[0] in tutorial


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """What the examples expect in their folder: params.yaml, a tiny generator file and photos."""
    import torch
    from PIL import Image
    from skimage import data

    from colorray.config import parse_params
    from colorray.models import build_generator
    from colorray.models.files import save_generator

    ws = tmp_path_factory.mktemp("docs-workspace")
    shutil.copy(ROOT / "params.yaml", ws / "params.yaml")
    params = parse_params({"data": {"image_size": 32},
                           "model": {"g_channels": 4, "g_channels_max": 8, "d_channels": 4}})
    torch.manual_seed(0)
    (ws / "models").mkdir()
    save_generator(build_generator(params), params, 0, ws / "models" / "generator.pt")
    photos = ws / "photos"
    (photos / "family").mkdir(parents=True)
    Image.fromarray(data.camera()[::4, ::4]).save(photos / "street.jpg", quality=90)  # gray, 128 x 128
    cat = (data.chelsea()[::3, ::3].mean(axis=2)).astype(np.uint8)  # made gray, 100 x 151
    Image.fromarray(cat).save(photos / "cat.png")
    Image.fromarray(data.astronaut()[::5, ::5]).save(photos / "family" / "portrait.jpg")  # color
    return ws


@pytest.mark.parametrize("lang, code", RUNNABLE)
def test_the_example_runs(lang, code, workspace, tmp_path, monkeypatch):
    """Shell blocks run in bash -euo pipefail; Python blocks in this process (colorray and torch
    are imported already, which keeps the suite fast), both in a copy of the workspace with a
    HOME of their own."""
    folder = tmp_path / "work"
    shutil.copytree(workspace, folder)
    home = tmp_path / "home"
    home.mkdir()
    for name in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    monkeypatch.chdir(folder)
    if lang == "python":
        exec(compile(code, "<example>", "exec"), {"__name__": "__main__"})
        return
    r = subprocess.run(["bash", "-euo", "pipefail", "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"{code}\n--- stdout\n{r.stdout[-3000:]}\n--- stderr\n{r.stderr[-3000:]}"
