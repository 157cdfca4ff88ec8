"""The package's shape: imports flow one way (no cycle, none hidden inside functions), and each
DVC stage's code deps in dvc.yaml are exactly the files its script imports, so `dvc repro`
re-runs a stage whenever code it runs changes, and only then. And the install is pinned, the
build included, so that `make` on a new machine installs what it did here."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from colorray.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "colorray"
# Files a module uses by path rather than by import: MLflow logs pyfunc_code.py as the model's
# code (models-from-code), so the stages that log a model run it.
USED_BY_PATH = {"colorray/pyfunc.py": ["colorray/pyfunc_code.py"]}


def module_file(name: str) -> Path | None:
    """colorray.a.b -> colorray/a/b.py or colorray/a/b/__init__.py (None: not a module)."""
    base = ROOT.joinpath(*name.split("."))
    for f in (base.with_suffix(".py"), base / "__init__.py"):
        if f.is_file():
            return f
    return None


def imports(path: Path) -> list[tuple[str, bool]]:
    """(colorray module, imported inside a function?) for every import statement of a file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    nested = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
              for n in ast.walk(f) if n is not f}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # `from colorray.x import y`: y is a module of its own, or a name defined in x
            names = [f"{node.module}.{a.name}" if module_file(f"{node.module}.{a.name}") else node.module
                     for a in node.names]
        else:
            continue
        out += [(n, id(node) in nested) for n in names if n.split(".")[0] == "colorray"]
    return out


def imported_files(name: str) -> list[Path]:
    """The files importing `name` runs: its own and its packages' __init__.py files."""
    parts = name.split(".")
    files = [module_file(".".join(parts[:i])) for i in range(1, len(parts) + 1)]
    return [f for f in files if f is not None]


def closure(script: Path) -> set[str]:
    """Every repo file running `script` imports, directly or not (empty __init__.py files left out:
    they hold no code; one that gains some joins the closure)."""
    seen, todo = set(), [script]
    while todo:
        f = todo.pop()
        rel = f.relative_to(ROOT).as_posix()
        if rel in seen:
            continue
        seen.add(rel)
        todo += [ROOT / p for p in USED_BY_PATH.get(rel, [])]
        for name, _ in imports(f):
            todo += imported_files(name)
    return {f for f in seen if (ROOT / f).stat().st_size > 0}


def test_no_import_cycle_and_no_import_hidden_in_a_function():
    graph, hidden = {}, []
    for f in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(f.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        graph[name] = set()
        for target, in_function in imports(f):
            for dep in imported_files(target):
                dep_name = ".".join(dep.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
                if dep_name != name and not name.startswith(dep_name + "."):  # a package's own __init__
                    graph[name].add(dep_name)
            if in_function:
                hidden.append(f"{f.relative_to(ROOT)} imports {target} inside a function")
    assert not hidden, "\n".join(hidden)

    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                cycle = path[path.index(dep):] + [dep] if dep in path else [node, dep]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep, path + [dep])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])


def test_the_cycle_check_finds_a_cycle(tmp_path, monkeypatch):
    """The check above is not vacuous: a module pair that imports each other is caught."""
    pkg = tmp_path / "colorray"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from colorray.b import x\n")
    (pkg / "b.py").write_text("def f():\n    from colorray import a\n")
    monkeypatch.setattr(__import__(__name__), "ROOT", tmp_path)
    monkeypatch.setattr(__import__(__name__), "PACKAGE", pkg)
    assert ("colorray.a", True) in imports(pkg / "b.py")
    assert closure(pkg / "a.py") == {"colorray/a.py", "colorray/b.py"}
    with pytest.raises(AssertionError, match="colorray/b.py imports colorray.a inside a function"):
        test_no_import_cycle_and_no_import_hidden_in_a_function()
    (pkg / "b.py").write_text("from colorray import a\n")
    with pytest.raises(AssertionError, match="import cycle: colorray.a -> colorray.b -> colorray.a"):
        test_no_import_cycle_and_no_import_hidden_in_a_function()


def _stages() -> dict:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def _code_deps(stage: dict) -> set[str]:
    return {d for d in stage.get("deps", []) if d.endswith(".py") or d.split("/")[0] in ("colorray", "pipeline")}


def test_each_stage_lists_exactly_the_code_its_script_imports():
    problems = []
    for name, stage in _stages().items():
        script = ROOT / stage["cmd"].split()[1]
        want, listed = closure(script), _code_deps(stage)
        problems += [f"dvc.yaml stage {name!r}: {f} is imported by {script.name} but is not in its deps"
                     for f in sorted(want - listed)]
        problems += [f"dvc.yaml stage {name!r}: {f} is in its deps but {script.name} does not import it"
                     for f in sorted(listed - want)]
    assert not problems, "\n".join(problems)


def test_each_stage_script_imports_the_module_its_command_runs():
    """pipeline/<stage>.py runs `colorray <stage>`; the module that command dispatches to must
    be among the script's imports, or the closure above would miss the stage's code."""
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for name, stage in _stages().items():
        script = ROOT / stage["cmd"].split()[1]
        module = sub.choices[name].get_default("run").split(":")[0]
        assert module in {m for m, _ in imports(script)}, f"{script} does not import {module}"


def test_the_data_stages_start_without_torch():
    """fetch downloads and unpacks, shard decodes with Pillow and writes tars: neither imports
    torch (3-4 CPU-s on these machines) to start, nor to refuse a bad input. (Writing
    webdataset tars imports it: webdataset does.)"""
    code = ("import sys; import colorray.cli, colorray.commands.fetch, colorray.commands.shard; "
            "print(*[m for m in ('torch', 'webdataset', 'mlflow', 'ray') if m in sys.modules])")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == []


def test_the_defaults_are_params_of_the_stages_that_read_them():
    """colorray/defaults.yaml holds every built-in default: each stage lists the same keys of it
    as of params.yaml (and the objectives' defaults where it reads model, gan or train), so
    changing a default re-runs exactly the stages that read it."""
    for name, stage in _stages().items():
        keys = {p for p in stage.get("params", []) if isinstance(p, str)} - {"preset"}
        defaults = next((p["colorray/defaults.yaml"] for p in stage.get("params", [])
                         if isinstance(p, dict) and "colorray/defaults.yaml" in p), [])
        if keys & {"model", "gan", "train"}:  # null there: the objective's default
            keys.add("objectives")
        assert set(defaults) == keys, f"dvc.yaml stage {name!r}: colorray/defaults.yaml keys {sorted(defaults)}, " \
                                      f"params.yaml keys {sorted(keys)}"


def test_the_install_is_pinned_down_to_the_build_backend_and_pip():
    """`make venv` on a new machine gets the versions this one has: pip and every dependency by
    constraints.txt, and the build backend, which pip fetches into an isolated build folder
    (constraints do not reach it), by an exact version in pyproject.toml. The license is an
    SPDX expression: setuptools warns that a TOML-table license stops building after 2027-02-18."""
    import tomlkit  # not tomllib: Python 3.10 has none (tomlkit comes with DVC)
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    project = tomlkit.parse((ROOT / "pyproject.toml").read_text()).unwrap()
    backend = [Requirement(r) for r in project["build-system"]["requires"]]
    assert backend and all(len(r.specifier) == 1 and next(iter(r.specifier)).operator == "==" for r in backend), backend
    assert isinstance(project["project"]["license"], str)
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not a pin (name==version)"
            pins[canonicalize_name(name)] = version
    wanted = project["project"]["dependencies"] + [r for extra in project["project"]["optional-dependencies"].values()
                                                   for r in extra]
    unpinned = [r for r in wanted if canonicalize_name(Requirement(r).name) not in pins]
    assert not unpinned, f"constraints.txt has no version for {unpinned}"
    assert "pip" in pins
    installs = [line for line in (ROOT / "Makefile").read_text().splitlines() if " pip install" in line]
    assert installs and all("-c constraints.txt" in line for line in installs), installs
