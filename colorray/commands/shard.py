"""`colorray shard` (DVC stage shard): decode, filter, split and write webdataset shards."""

from __future__ import annotations

from pathlib import Path

from colorray.config import load_params
from colorray.data.shards import write_shards


def run(args) -> None:
    cfg = load_params(args.params).data
    m = write_shards(cfg, Path(args.raw), Path(args.out), workers=args.workers)
    counts = ", ".join(f"{s} {v['count']} in {len(v['shards'])} shards" for s, v in m["splits"].items())
    print(f"shard: {m['inputs']} inputs -> kept {m['kept']} ({counts}), dropped "
          f"{len(m['dropped'])}, outside subset {m['outside_subset']}; see {args.out}/manifest.json")
