"""`colorray init` (DVC stage init): resolve train.init_from to the starting weights,
models/init.pt, and the record of what they are, models/init.json (colorray.train.init_from)."""

from __future__ import annotations

from pathlib import Path

from colorray.config import load_params
from colorray.model_uri import default_tracking_uri
from colorray.train.init_from import resolve


def run(args) -> None:
    ref = load_params(args.params).train.init_from
    info = resolve(ref, Path(args.models), default_tracking_uri(Path(args.root)) if ref else None)
    if ref is None:
        print("init: train.init_from is null: training starts from random weights")
        return
    named = ", ".join(f"{k} {info[k]}" for k in ("registered_name", "version", "model_id", "run_id") if info.get(k))
    print(f"init: {ref} -> {args.models}/init.pt ({info['kind']}, {info['trained_iters']} iterations"
          f"{', with D' if info['discriminator'] else ', no D'}{'; ' + named if named else ''}; sha256 "
          f"{info['sha256'][:12]})")
