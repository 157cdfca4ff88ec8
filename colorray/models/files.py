"""Generator files: the weights with the parameters that build them (and, from the train
stage, the MLflow run they came from). Written by the train and baseline stages, read by the
evaluate stage, the pyfunc model and `colorray colorize`."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from colorray.atomic import torch_save_atomic
from colorray.config import Params, parse_params
from colorray.models import build_generator

GENERATOR_FORMAT = "colorray-generator-1"  # a generator file: weights + the params that build it
CHECKPOINT_FORMAT = "colorray-checkpoint-1"  # a training checkpoint (colorray.train.step): all the state


def save_generator(G: nn.Module, params: Params, iters: int, path: str | Path, **meta) -> None:
    """The generator's weights with the parameters that build it (written atomically)."""
    state = {k: v.contiguous() for k, v in G.state_dict().items()}
    torch_save_atomic({"format": GENERATOR_FORMAT, "params": params.model_dump(mode="json"), "G": state,
                       "iter": iters, **meta}, path)


def load_generator(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, Params, dict]:
    """(generator in eval mode, its parameters, the file's other fields)."""
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
    meta = {k: v for k, v in saved.items() if k not in ("G", "params", "format")}
    return generator_from_state(params, saved["G"]).to(device), params, meta


def generator_from_state(params: Params, state: dict) -> nn.Module:
    """The generator `params` describe, with the weights `state` (a generator file's or a
    training checkpoint's "G"), in eval mode."""
    G = build_generator(params)
    G.load_state_dict(state)
    return G.eval()
