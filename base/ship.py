"""Ship a trained generator as colorray's built-in base model: its weights in fp16 (tensors
only, loaded with torch.load(weights_only=True)) at colorray/weights/base.pt, beside the model
card colorray/weights/MODEL_CARD.md that --card names (written by hand from docs/results.md's
measured table: data, recipe command and commit, budget and CPU, metrics beside gray and
L1-only, what it does badly, the data's terms of use).

    python base/ship.py base/models/calibrated.pt --card colorray/weights/MODEL_CARD.md

Also how a session that must stop hands its training on: `--out base/wip/generator-fp16.pt`
writes the same fp16 file elsewhere, and the next machine starts from it (train.init_from).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from colorray.model_uri import BASE_WEIGHTS
from colorray.models.files import generator_from_state, read_model_file, save_generator

MAX_BYTES = 10 * 2**20  # what a wheel may reasonably carry


def ship(src: Path, out: Path) -> int:
    model = read_model_file(src)
    G = generator_from_state(model.params, model.G).half()
    kept = {k: model.meta[k] for k in ("calibration",) if k in model.meta}  # base/calibrate.py's choice
    save_generator(G, model.params, model.iter, out, kind="base", source_kind=model.kind, **kept)
    size = out.stat().st_size
    if size > MAX_BYTES:
        out.unlink()
        raise SystemExit(f"{out}: {size / 2**20:.1f} MiB, over {MAX_BYTES / 2**20:.0f} MiB; not shipped")
    return size


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="a generator .pt or a training checkpoint.pt")
    ap.add_argument("--out", default=str(BASE_WEIGHTS))
    ap.add_argument("--card", default=None, help="the model card that must stand beside it")
    args = ap.parse_args(argv)
    if args.card is not None and not Path(args.card).is_file():
        raise SystemExit(f"{args.card}: no model card; write it before shipping the weights")
    size = ship(Path(args.model), Path(args.out))
    print(f"{args.out}: {size / 2**20:.2f} MiB (fp16)")


if __name__ == "__main__":
    main()
