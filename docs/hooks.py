"""MkDocs hook: the Reference pages, generated from the code at every build, so they cannot drift.

- reference/params.md: every key of params.yaml. Type and allowed range from the pydantic models
  of colorray/config.py, default from colorray/defaults.yaml (and, for keys left null there, what
  each objective brings), meaning from the comment after the key in params.yaml.
- reference/cli.md: every `colorray` command and flag, walked from colorray.cli.build_parser().
- reference/metrics.md: every metric of colorray/metrics/registry.py: direction, what it needs,
  and its description from the registry's (and the classifier metrics') docstring.
- reference/presets.md: every preset of colorray/presets.py: the study, its data, what it sets.

Nothing generated is written into the repository: the pages exist only in the built site.
A key, flag, metric or preset without a description is logged as a warning, which fails
`mkdocs build --strict`; tests/test_docs.py checks the same through the functions below.
"""

from __future__ import annotations

import argparse
import logging
import re
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

ROOT = Path(__file__).resolve().parents[1]
PARAMS_FILE = ROOT / "params.yaml"
log = logging.getLogger("mkdocs.hooks.reference")

# Keys checked by a field validator of colorray/config.py rather than by a Field constraint: what
# each validator allows, in words. A validator on a key missing here is reported (see `allowed`).
VALIDATED = {
    "data.image_size": "one of 32, 64, 128, 256",
    "data.sha256": "64 hexadecimal characters, or null",
    "train.init_from": "null, a file path, or a models:/ URI (runs:/ URIs are refused)",
    "train.betas_g": "two numbers, each in [0, 1)",
    "train.betas_d": "two numbers, each in [0, 1)",
}


# ---- params.yaml ---------------------------------------------------------------------------

def param_comments(path: Path = PARAMS_FILE) -> tuple[dict[str, str], dict[str, str]]:
    """({dotted key: its comment}, {section: the comment block above it}) from params.yaml.

    A comment continues on the following lines that hold only a comment, indented. The
    `[default]` that ends the comments of the model, gan and train keys is dropped (the
    default column comes from defaults.yaml)."""
    keys: dict[str, str] = {}
    sections: dict[str, str] = {}
    block: list[str] = []  # column-0 comment lines since the last key
    section, last = None, None
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not stripped:
            block, last = [], None
            continue
        if stripped.startswith("#"):
            if line.startswith("#"):
                block.append(stripped.lstrip("#").strip())
                last = None
            elif last is not None:
                keys[last] = f"{keys[last]} {stripped.lstrip('#').strip()}".strip()
            continue
        m = re.match(r"^( *)([A-Za-z_][\w.]*):(.*)$", line)
        if not m:  # a list item (`- athletic_field/outdoor`)
            continue
        indent, key, rest = len(m.group(1)), m.group(2), m.group(3)
        comment = rest.split("#", 1)[1].strip() if "#" in rest else ""
        if indent == 0:
            section = key
            if block:
                sections[key] = " ".join(block)
            block = []
            if rest.split("#", 1)[0].strip():  # a top-level key with a value (preset)
                keys[key], last = comment, key
            else:
                last = None
        elif indent == 2 and section is not None:
            last = f"{section}.{key}"
            keys[last] = _drop_default(comment) if section in ("model", "gan", "train") else comment
        else:  # deeper: the knobs of tune.space, the values of a mapping
            last = None
    return keys, sections


def _drop_default(comment: str) -> str:
    """"lambda_1 ...; 0: no discriminator [1.0]" -> "lambda_1 ...; 0: no discriminator": the
    bracketed built-in default that ends a comment of the model, gan and train sections."""
    comment = comment.rstrip()
    if not comment.endswith("]"):
        return comment
    depth = 0
    for i in range(len(comment) - 1, -1, -1):
        depth += {"]": 1, "[": -1}.get(comment[i], 0)
        if depth == 0:
            return comment[:i].rstrip() if i == 0 or comment[i - 1].isspace() else comment
    return comment


def _fmt(value: Any) -> str:
    """A value as YAML writes it inline."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_fmt(v)}" for k, v in value.items()) + "}"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return f"{value:g}" if abs(value) < 1e6 else str(int(value))
    return str(value)


_TYPE_NAMES = {"str": "string", "int": "integer", "float": "number", "bool": "bool"}


def _type(annotation) -> tuple[str, list[str]]:
    """(the type in words, the values a Literal allows)."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        kinds = sorted({_TYPE_NAMES.get(type(a).__name__, type(a).__name__) for a in args})
        return " or ".join(kinds), [_fmt(a) for a in args]
    if origin is Union:
        names, choices = [], []
        nullable = type(None) in args
        for a in args:
            if a is type(None):
                continue
            name, c = _type(a)
            names.append(name)
            choices += c
        if choices and "bool" in names:
            choices += ["true", "false"]
        text = " or ".join(dict.fromkeys(names))
        return (f"{text} or null" if nullable else text), (choices + ["null"] if choices and nullable else choices)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"list of {_type(args[0])[0]}", []
        return "[" + ", ".join(_type(a)[0] for a in args) + "]", []
    if origin is dict:
        return "mapping", []
    name = getattr(annotation, "__name__", str(annotation))
    return _TYPE_NAMES.get(name, name), []


def _bounds(metadata) -> str:
    out = []
    for m in metadata:
        for attr, sign in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
            if getattr(m, attr, None) is not None:
                out.append(f"{sign} {_fmt(getattr(m, attr))}")
    return ", ".join(out)


def _objective_defaults(section: str, key: str) -> str:
    """For a key left null in defaults.yaml: what each objective brings to it, if anything."""
    from colorray.config import DEFAULTS, objective_defaults

    by_value: dict[str, list[str]] = {}
    for objective in DEFAULTS["objectives"]:
        value = objective_defaults(objective).get(section, {}).get(key)
        if value is not None:
            by_value.setdefault(_fmt(value), []).append(objective)
    if not by_value:
        return ""
    return "the objective's: " + "; ".join(f"{', '.join(objs)}: {v}" for v, objs in by_value.items())


def param_rows() -> list[dict]:
    """One row per key of params.yaml: section, key, type, allowed, default, meaning."""
    import yaml

    from colorray.config import DEFAULTS, PRESETTABLE, Params

    comments, _ = param_comments()
    shipped = yaml.safe_load(PARAMS_FILE.read_text()) or {}
    rows = []
    for section, field in Params.model_fields.items():
        model = field.annotation
        if not (isinstance(model, type) and hasattr(model, "model_fields")):  # a top-level key: preset
            type_, choices = _type(field.annotation)
            rows.append({"section": section, "key": section, "type": type_, "allowed":
                         "null or a preset name (see Presets)", "default": _fmt(field.default),
                         "shipped": _fmt(shipped.get(section)), "meaning": comments.get(section, "")})
            continue
        validators = {f for d in model.__pydantic_decorators__.field_validators.values() for f in d.info.fields}
        for key, f in model.model_fields.items():
            dotted = f"{section}.{key}"
            type_, choices = _type(f.annotation)
            allowed = ", ".join(choices) if choices else _bounds(f.metadata)
            if key in validators:
                if dotted not in VALIDATED:
                    log.warning(f"docs/hooks.py: {dotted} has a validator in colorray/config.py; say what it "
                                "allows in VALIDATED")
                allowed = VALIDATED.get(dotted, allowed)
            default = DEFAULTS.get(section, {}).get(key)
            default = _fmt(default)
            if default == "null" and section in PRESETTABLE:
                default = _objective_defaults(section, key) or default
            value = (shipped.get(section) or {}).get(key)
            rows.append({"section": section, "key": dotted, "type": type_, "allowed": allowed or "any",
                         "default": default, "shipped": _fmt(value), "meaning": comments.get(dotted, "")})
    return rows


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def params_page() -> str:
    from colorray.config import PRESETTABLE, Params

    _, section_comments = param_comments()
    rows = param_rows()
    out = ["# Parameters (`params.yaml`)", "",
           "Generated from the code at every build of this site: types and allowed ranges from the "
           "pydantic models of `colorray/config.py`, defaults from `colorray/defaults.yaml`, meanings "
           "from the comments of the project's `params.yaml`.", "",
           "`params.yaml` is validated into a frozen, typed configuration: an unknown key, a wrong "
           "type or an out-of-range value stops the stage with a message that names the dotted key "
           "and what is allowed. `colorray params` prints the full, validated configuration. A key "
           "left out takes its default. In the " + ", ".join(f"`{s}`" for s in PRESETTABLE) +
           " sections, `null` means: the preset's value, else the objective's default, else the "
           "built-in default; any other value overrides the preset. Change one key for one "
           "experiment with `dvc exp run -S section.key=value`.", ""]
    for section, field in Params.model_fields.items():
        model = field.annotation
        out.append(f"## `{section}`")
        out.append("")
        # The comment above the section in params.yaml, else the first paragraph of its model's docstring.
        doc = (model.__doc__ or "").strip().split("\n\n")[0] if hasattr(model, "model_fields") else ""
        intro = section_comments.get(section) or " ".join(doc.split())
        if intro:
            out += [intro, ""]
        section_rows = [r for r in rows if r["section"] == section]
        out.append("| key | type | allowed | default | meaning |")
        out.append("|---|---|---|---|---|")
        for r in section_rows:
            default = f"`{r['default']}`" if len(r["default"]) < 40 and not r["default"].startswith("the ") \
                else r["default"]
            shipped = ""
            if r["shipped"] != "null" and r["shipped"] != r["default"] and section not in ("tune",):
                shipped = f" (params.yaml: `{r['shipped']}`)"
            out.append(f"| `{r['key']}` | {_cell(r['type'])} | {_cell(r['allowed'])} | {_cell(default)}{shipped} "
                       f"| {_cell(r['meaning'])} |")
        out.append("")
    return "\n".join(out)


# ---- the command line ----------------------------------------------------------------------

def _subcommands(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                yield name, helps.get(name) or "", sub


def cli_rows() -> list[dict]:
    """One row per command (flag "") and per flag or positional argument of each command."""
    from colorray.cli import build_parser

    rows = []
    for name, help_, sub in _subcommands(build_parser()):
        rows.append({"command": name, "flag": "", "default": "", "help": help_ or "", "parser": sub})
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            flag = ", ".join(action.option_strings) or action.dest
            default = "" if action.default in (None, False, argparse.SUPPRESS) or action.option_strings == [] \
                else _fmt(action.default)
            if action.choices:
                flag += " {" + ",".join(map(str, action.choices)) + "}"
            rows.append({"command": name, "flag": flag, "default": default, "help": action.help or "",
                         "parser": sub})
    return rows


def cli_page() -> str:
    from colorray.cli import build_parser

    parser = build_parser()
    rows = cli_rows()
    out = ["# Command line (`colorray`)", "",
           "Generated from `colorray.cli.build_parser()` at every build of this site: the help of "
           "every command and flag, as `colorray <command> --help` prints it.", "",
           f"{parser.description}", "",
           "Every error that is the user's to fix (a bad parameter, a missing file, a refused "
           "download) is one line on stderr and exit status 2; Ctrl-C during a stage exits 130 "
           "with nothing written.", "",
           "| command | what it does |", "|---|---|"]
    commands = [r for r in rows if not r["flag"]]
    for r in commands:
        out.append(f"| [`colorray {r['command']}`](#colorray-{r['command']}) | {_cell(r['help'])} |")
    out.append("")
    for c in commands:
        usage = " ".join(c["parser"].format_usage().split())
        out += [f"## colorray {c['command']}", "", _cell(c["help"]), "", "```text", usage, "```", "",
                "| argument | default | meaning |", "|---|---|---|"]
        for r in rows:
            if r["flag"] and r["command"] == c["command"]:
                default = f"`{r['default']}`" if r["default"] else ""
                out.append(f"| `{r['flag']}` | {_cell(default)} | {_cell(r['help'])} |")
        out.append("")
    return "\n".join(out)


# ---- metrics --------------------------------------------------------------------------------

def metric_descriptions() -> dict[str, str]:
    """Each metric's description, from the table in colorray/metrics/registry.py's docstring and
    the bullets of colorray/metrics/classifier.py's (accuracy, CIM, Omega)."""
    from colorray.metrics import classifier, registry

    out = {}
    for line in (registry.__doc__ or "").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) >= 3 and cells[0] not in ("name", "---"):
            out[cells[0]] = cells[2]
    text = re.sub(r"\n[ \t]+", " ", classifier.__doc__ or "")  # a bullet's indented lines joined
    for bullet in re.findall(r"^- (.+)$", text, re.M):
        first = bullet.split()[0].strip(";:,").lower()
        if first in registry.METRICS:
            out[first] = bullet.rstrip(";.")
    return out


NEEDS = {
    "lpips": "torchvision's AlexNet weights on disk (`$TORCH_HOME/hub/checkpoints/`); else reported unavailable",
    "fid": "pytorch-fid's Inception weights (`metrics.fid_weights`); else reported unavailable",
}


def metric_rows() -> list[dict]:
    from colorray.metrics.registry import METRICS

    descriptions = metric_descriptions()
    return [{"name": m.name, "better": m.better, "needs": NEEDS.get(m.needs, m.needs) if m.needs else "",
             "per_image": m.per_image is not None, "description": descriptions.get(m.name, "")}
            for m in METRICS.values()]


def metrics_page() -> str:
    out = ["# Metrics", "",
           "Generated from the metric registry (`colorray/metrics/registry.py`) at every build of "
           "this site. One registry serves training and tuning (on val images, names prefixed "
           "`val/`), the evaluate stage (on the test split, `eval/metrics.json` and the MLflow "
           "evaluation run as `<model>/<metric>`), the report and the selection: a metric's "
           "direction is read from here everywhere.", "",
           "| metric | better | computed | needs | what it is |", "|---|---|---|---|---|"]
    for r in metric_rows():
        computed = "per image, averaged" if r["per_image"] else "from the whole set"
        out.append(f"| `{r['name']}` | {r['better']} | {computed} | {_cell(r['needs']) or 'nothing more'} "
                   f"| {_cell(r['description'])} |")
    out += ["", "`better`: `lower` or `higher` is the direction in which a model improves; `-` marks a "
            "quantity reported for reading, never used to rank (a model can be too colorful as well "
            "as too gray: `delta_cf` ranks that). `tune.metric` and `evaluate.select_by` name one "
            "of these.", ""]
    return "\n".join(out)


# ---- presets --------------------------------------------------------------------------------

def preset_rows() -> list[dict]:
    from colorray.config import flatten
    from colorray.presets import PRESETS

    rows = []
    for name, p in PRESETS.items():
        sets = {f"{section}.{k}": v for section in ("model", "gan", "train")
                for k, v in flatten(p.get(section) or {}).items()}
        rows.append({"name": name, "study": p.get("study", ""), "data": p.get("data", {}), "sets": sets})
    return rows


def presets_page() -> str:
    out = ["# Presets", "",
           "Generated from `colorray/presets.py` at every build of this site (`colorray presets` "
           "prints the same list).", "",
           "`dvc exp run -S preset=<name>` (or `preset: <name>` in params.yaml) applies a study's "
           "configuration to the `model`, `gan` and `train` sections; any non-null value there "
           "overrides it, e.g. `-S preset=000-wgan -S train.batch_size=64`. The data a study used is "
           "listed but not applied, so a recipe can be tried on any data: add the `-S data...` "
           "overrides shown to train on the study's own data. Iteration budgets are the study's "
           "epochs times its training-set size over the batch size.", "",
           "| preset | the study it reproduces | its data | what it sets |", "|---|---|---|---|"]
    for r in preset_rows():
        data = " ".join(f"`-S data.{k}={_fmt(v)}`" for k, v in r["data"].items())
        sets = ", ".join(f"`{k}={_fmt(v)}`" for k, v in r["sets"].items()) or "nothing (the defaults)"
        out.append(f"| `{r['name']}` | {_cell(r['study'])} | {data} | {_cell(sets)} |")
    out.append("")
    return "\n".join(out)


# ---- what is missing, and the MkDocs events ---------------------------------------------------

def missing_descriptions() -> list[str]:
    """Every params key, CLI command or flag, metric and preset that has no description."""
    missing = [f"params.yaml: {r['key']} has no comment" for r in param_rows() if not r["meaning"]]
    missing += [f"colorray {r['command']} {r['flag']}".strip() + ": no help" for r in cli_rows() if not r["help"]]
    missing += [f"metric {r['name']}: no description in the registry's docstring" for r in metric_rows()
                if not r["description"]]
    missing += [f"preset {r['name']}: no study" for r in preset_rows() if not r["study"]]
    return missing


PAGES = {"reference/params.md": params_page, "reference/cli.md": cli_page,
         "reference/metrics.md": metrics_page, "reference/presets.md": presets_page}


def on_files(files, config):
    from mkdocs.structure.files import File

    for problem in missing_descriptions():
        log.warning(f"reference: {problem}")
    for path, page in PAGES.items():
        files.append(File.generated(config, path, content=page()))
    return files
