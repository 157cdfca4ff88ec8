"""`train.init_from`: training that starts from an existing model's weights (fine-tuning).

The source is a generator file (models/generator.pt, which holds D too since colorray logs
both), a training checkpoint (models/checkpoint.pt), or an MLflow model URI
(`models:/colorray@champion`, `models:/colorray/3`, `models:/<model_id>`). The init stage
(`colorray init`, DVC stage `init`) resolves it once into two files:

- models/init.pt: the starting weights, tensors only: G, D when the source has one, and the
  parameters the source was trained with;
- models/init.json: what was asked for and what it resolved to (registered version, model id,
  source run, file), and the sha256 of init.pt.

dvc.lock holds both hashes, so `dvc repro` retrains exactly when the starting point changed,
and the lineage is on disk, not only in MLflow. The workers (`apply`) load G, and D when its
architecture matches; optimizers, schedules and the iteration count start fresh, and every
other parameter may differ from the source's (data, objective, lr, iters...).
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from colorray.atomic import torch_save_atomic, write_json_atomic
from colorray.config import Params, flatten, parse_params
from colorray.model_uri import builtin_weights, describe, download_weights, is_mlflow_uri
from colorray.models.files import read_model_file

INIT_FORMAT = "colorray-init-1"
WEIGHTS, RECORD = "init.pt", "init.json"  # in models/
WHAT = "train.init_from"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def resolve(ref: str | None, models_dir: Path, tracking_uri: str | None = None) -> dict:
    """Write models/init.pt and models/init.json for `ref` (None: no starting model, a file that
    says so); returns the record."""
    weights, record = Path(models_dir) / WEIGHTS, Path(models_dir) / RECORD
    if ref is None:
        torch_save_atomic({"format": INIT_FORMAT, "G": None}, weights)
        info: dict = {"init_from": None}
    else:
        with tempfile.TemporaryDirectory(prefix="colorray-init-") as tmp:
            if is_mlflow_uri(ref):
                info = describe(ref, tracking_uri, what=WHAT)  # the alias read once: the version downloaded
                path = download_weights(info["resolved_uri"], Path(tmp), tracking_uri, what=WHAT)
            elif ref.startswith("builtin:"):  # the model that ships with colorray
                path = builtin_weights(ref, what=WHAT)
                info = {"uri": ref}
            else:
                path = Path(ref).expanduser()
                if not path.is_file():
                    raise FileNotFoundError(f"{WHAT} {ref}: no such file (a generator .pt, a checkpoint.pt, or an "
                                            "MLflow models:/<name>@<alias>, models:/<name>/<version> or "
                                            "models:/<model_id> URI)")
                info = {"uri": str(path.resolve())}
            model = read_model_file(path, what=f"{WHAT} {ref}")
        torch_save_atomic({"format": INIT_FORMAT, "params": model.params.model_dump(mode="json"), "G": model.G,
                           "D": model.D, "iter": model.iter, "kind": model.kind}, weights)
        info = {"init_from": ref, **info, "kind": model.kind, "trained_iters": model.iter,
                "discriminator": model.D is not None}
    info["sha256"] = _sha256(weights)
    write_json_atomic(record, info, sort_keys=True)
    return info


def read_record(models_dir: Path) -> dict:
    """models/init.json; {"init_from": None} when there is none."""
    path = Path(models_dir) / RECORD
    return json.loads(path.read_text()) if path.exists() else {"init_from": None}


def load(weights: str | Path) -> dict | None:
    """models/init.pt (tensors only); None when it names no starting model."""
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{weights}: not a readable colorray init file ({type(e).__name__}: {e}); "
                         "run the init stage again (dvc repro init)") from None
    if not isinstance(state, dict) or state.get("format") != INIT_FORMAT:
        raise ValueError(f"{weights}: not a colorray init file (expected format {INIT_FORMAT!r})")
    return state if state.get("G") is not None else None


def lineage_tags(record: dict) -> dict[str, str]:
    """MLflow tags naming the model a run started from (none for a run from random weights)."""
    if not record.get("init_from"):
        return {}
    keys = ("init_from", "uri", "model_id", "registered_name", "version", "alias", "run_id", "kind", "sha256")
    return {f"colorray.parent.{k}": str(record[k]) for k in keys if record.get(k) is not None}


def _fits(net: nn.Module, state: dict) -> bool:
    own = net.state_dict()
    return own.keys() == state.keys() and all(own[k].shape == state[k].shape for k in own)


def _differing(source: Params, run: Params, prefixes: tuple[str, ...]) -> list[str]:
    a, b = flatten(source.model_dump(mode="json")), flatten(run.model_dump(mode="json"))
    keys = [k for k in sorted(a.keys() | b.keys()) if k.startswith(prefixes) or k == "data.image_size"]
    return [f"{k} {a.get(k)!r} -> {b.get(k)!r}" for k in keys if a.get(k) != b.get(k)]


G_KEYS = ("model.generator", "model.g_")
D_KEYS = ("model.discriminator", "model.d_")


def apply(trainer, init: dict, log: Callable[[str], None] = print) -> bool:
    """Load the starting weights into a fresh trainer: G always (an architecture mismatch is a
    ValueError naming the model.* keys that differ), D when the source has one of this run's
    architecture (otherwise D starts from random weights, and the log says why). Returns
    whether D was loaded."""
    source = parse_params(init["params"], origin=f"the starting model ({WHAT})")
    if not _fits(trainer.G, init["G"]):
        keys = _differing(source, trainer.params, G_KEYS) or ["(no model.* key differs: the weights' shapes do)"]
        raise ValueError(f"{WHAT}: the starting generator has another architecture than this run's: "
                         f"{'; '.join(keys)}. Set these as the starting model has them, or start from a model "
                         "of this architecture.")
    trainer.G.load_state_dict(init["G"])
    if trainer.D is None:
        log(f"[colorray] {WHAT}: G from the starting model (this run trains no discriminator)")
        return False
    if init.get("D") is None:
        log(f"[colorray] {WHAT}: G from the starting model; D from random weights (the source has none)")
        return False
    if not _fits(trainer.D, init["D"]):
        keys = _differing(source, trainer.params, D_KEYS) or ["its weights' shapes"]
        log(f"[colorray] {WHAT}: G from the starting model; D from random weights (another architecture: "
            f"{'; '.join(keys)})")
        return False
    trainer.D.load_state_dict(init["D"])
    log(f"[colorray] {WHAT}: G and D from the starting model")
    return True



def inherit(params: Params, weights: str | Path | None) -> Params:
    """`params` with what a run takes over from its starting model: the chroma gain it was
    calibrated with (model.chroma_gain), unless this run sets one. The fine-tuning then starts
    from exactly the colors of the model it names (the shipped base is paled to 0.65)."""
    if weights is None or params.model.chroma_gain is not None:
        return params
    init = load(weights)
    gain = (init or {}).get("params", {}).get("model", {}).get("chroma_gain")
    if gain is None or gain == 1.0:
        return params
    raw = params.model_dump(mode="json")
    raw["model"]["chroma_gain"] = gain
    return parse_params(raw, origin=f"params.yaml with the starting model's model.chroma_gain {gain} ({WHAT})")


def prepare(ref: str | None, init: Path | None, fallback_dir: Path, tracking_uri: str | None) -> tuple[Path | None, dict]:
    """The init.pt a run starts from (None: random weights) and its record. `init`: the init
    stage's models/init.pt (the DVC stages pass it), checked to be for `ref`; without it, `ref`
    is resolved now into `fallback_dir` (a command run by hand starts from what the URI names now)."""
    if init is None:
        if ref is None:
            return None, {"init_from": None}
        record = resolve(ref, fallback_dir, tracking_uri)
        return (Path(fallback_dir) / WEIGHTS).resolve(), record
    record = read_record(Path(init).parent)
    if record.get("init_from") != ref or not Path(init).exists():
        raise ValueError(f"{init}: resolved for train.init_from={record.get('init_from')!r}, but the parameters say "
                         f"{ref!r}; run the init stage first (dvc repro init, or colorray init)")
    # Absolute: the Ray workers that read it run in other folders.
    return (Path(init).resolve() if ref is not None else None), record
