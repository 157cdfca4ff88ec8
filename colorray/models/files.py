"""Generator files: the weights with the parameters that build them (and, from the train
stage, the MLflow run they came from). Written by the train and baseline stages, read by the
evaluate stage, the pyfunc model and `colorray colorize`."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from colorray.config import Params, parse_params

GENERATOR_FORMAT = "colorray-generator-1"


def save_generator(G: nn.Module, params: Params, iters: int, path: str | Path, **meta) -> None:
    """The generator's weights with the parameters that build it (written atomically)."""
    from colorray.atomic import torch_save_atomic

    state = {k: v.contiguous() for k, v in G.state_dict().items()}
    torch_save_atomic({"format": GENERATOR_FORMAT, "params": params.model_dump(mode="json"), "G": state,
                       "iter": iters, **meta}, path)


def load_generator(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, Params, dict]:
    """(generator in eval mode, its parameters, the file's other fields)."""
    from colorray.models import build_generator

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such generator file")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{path}: not a readable colorray generator ({e})") from None
    if not isinstance(saved, dict) or saved.get("format") != GENERATOR_FORMAT:
        raise ValueError(f"{path}: not a colorray generator (expected format {GENERATOR_FORMAT!r})")
    params = parse_params(saved["params"], origin=str(path))
    G = build_generator(params)
    G.load_state_dict(saved["G"])
    meta = {k: v for k, v in saved.items() if k not in ("G", "params", "format")}
    return G.to(device).eval(), params, meta
