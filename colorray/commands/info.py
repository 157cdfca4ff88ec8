"""`colorray sources`, `colorray presets`, `colorray params`: what is available, and the
parameters as the stages will see them."""

from __future__ import annotations

import json

from colorray.config import load_params, read_yaml
from colorray.data.sources import SOURCES
from colorray.presets import PRESETS
from colorray.sweep.space import parse_space


def sources(args) -> None:
    for name, src in SOURCES.items():
        urls = ", ".join(f.url or "(manual download)" for f in src.files) or "(bundled, no download)"
        print(f"{name:16s} {src.study}\n{'':16s} {urls}")


def presets(args) -> None:
    for name, preset in PRESETS.items():
        data = " ".join(f"-S data.{k}={v}" for k, v in preset["data"].items())
        print(f"{name:20s} {preset['study']}\n{'':20s} data: {data}")


def params(args) -> None:
    params = load_params(args.params)
    parse_space(read_yaml(args.params) or {}, params.tune)
    print(json.dumps(params.model_dump(mode="json"), indent=2))
