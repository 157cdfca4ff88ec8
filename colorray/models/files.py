"""Generator files: the weights with the parameters that build them (and, from the train
stage, the discriminator's weights and the MLflow run they came from). Written by the train and baseline stages, read by the
evaluate stage, the pyfunc model and `colorray colorize`."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from colorray.redact import redact_tree
from colorray.atomic import torch_save_atomic
from colorray.config import Params, parse_params
from colorray.models import build_generator

GENERATOR_FORMAT = "colorray-generator-1"  # a generator file: weights + the params that build it
CHECKPOINT_FORMAT = "colorray-checkpoint-1"  # a training checkpoint (colorray.train.step): all the state


def save_generator(G: nn.Module, params: Params, iters: int, path: str | Path, D: dict | None = None,
                   **meta) -> None:
    """The generator's weights with the parameters that build it (written atomically), and
    the discriminator's state_dict `D` when given: what fine-tuning a GAN from this file needs
    (train.init_from); colorizing reads G only."""
    state = {k: v.contiguous() for k, v in G.state_dict().items()}
    extra = {"D": {k: v.contiguous() for k, v in D.items()}} if D is not None else {}
    # The file travels (MLflow artifacts, the registry): no credential of a data URL in it.
    torch_save_atomic({"format": GENERATOR_FORMAT, "params": redact_tree(params.model_dump(mode="json")), "G": state,
                       "iter": iters, **extra, **meta}, path)


class ModelFile(NamedTuple):
    """What a generator file or a training checkpoint holds, tensors only."""

    kind: str  # "generator" or "checkpoint"
    params: Params  # the parameters it was trained with
    G: dict  # the generator's state_dict
    D: dict | None  # the discriminator's, when the file has one
    iter: int  # generator steps it was trained for
    meta: dict  # a generator file's other fields (run_id, model_uri, ...)


def read_model_file(path: str | Path, what: str | None = None) -> ModelFile:
    """A generator file or a training checkpoint, read with torch.load(weights_only=True): a
    clear ValueError naming `what` (default: the path) for anything else."""
    path, what = Path(path), what or str(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what}: no such file")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, corrupt, not torch's, or holding a pickled object
        raise ValueError(f"{what}: not a readable colorray model file ({type(e).__name__}: {e})") from None
    kinds = {GENERATOR_FORMAT: "generator", CHECKPOINT_FORMAT: "checkpoint"}
    if not isinstance(saved, dict) or saved.get("format") not in kinds:
        raise ValueError(f"{what}: neither a colorray generator file nor a training checkpoint")
    try:
        params = parse_params(saved["params"], origin=f"{what} (params)")
        G, D = saved["G"], saved.get("D")
        if not isinstance(G, dict) or not (D is None or isinstance(D, dict)):
            raise KeyError("G / D")
    except (ValueError, KeyError) as e:
        raise ValueError(f"{what}: a damaged colorray model file ({e})") from None
    meta = {k: v for k, v in saved.items() if k not in ("G", "D", "params", "format", "opt_g", "opt_d")} \
        if saved["format"] == GENERATOR_FORMAT else {}
    return ModelFile(kinds[saved["format"]], params, G, D, int(saved.get("iter", 0)), meta)


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
    meta = {k: v for k, v in saved.items() if k not in ("G", "D", "params", "format")}
    return generator_from_state(params, saved["G"]).to(device), params, meta


def generator_from_state(params: Params, state: dict) -> nn.Module:
    """The generator `params` describe, with the weights `state` (a generator file's or a
    training checkpoint's "G"), in eval mode."""
    G = build_generator(params)
    G.load_state_dict(state)
    return G.eval()
