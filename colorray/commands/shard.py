"""`colorray shard` (DVC stage shard): decode, filter, split and write webdataset shards; with
--from, convert existing raw shards to another encoding."""

from __future__ import annotations

from pathlib import Path

from colorray.config import load_params
from colorray.data.shards import convert_shards, write_shards


def run(args) -> None:
    cfg = load_params(args.params).data
    overrides = {k: v for k, v in (("encoding", args.encoding), ("jpeg_quality", args.jpeg_quality),
                                   ("compression", args.compression)) if v is not None}
    if overrides:  # validated like params.yaml
        cfg = type(cfg).model_validate({**cfg.model_dump(), **overrides})
    if args.convert:
        m = convert_shards(args.convert, Path(args.out), cfg)
    else:
        m = write_shards(cfg, Path(args.raw), Path(args.out), workers=args.workers)
    counts = ", ".join(f"{s} {v['count']} in {len(v['shards'])} shards" for s, v in m["splits"].items())
    size = sum(sh["bytes"] for v in m["splits"].values() for sh in v["shards"])
    fmt = m["format"]
    print(f"shard: {m['inputs']} inputs -> kept {m['kept']} ({counts}), dropped "
          f"{len(m['dropped'])}, outside subset {m['outside_subset']}; {fmt['encoding']} in "
          f"{'gzipped ' if fmt['compression'] == 'gzip' else ''}tars, {size / 2**20:.1f} MiB "
          f"({size / max(m['kept'], 1):,.0f} bytes an image); see {args.out}/manifest.json")
