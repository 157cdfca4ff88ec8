#!/usr/bin/env bash
# Tiny-ImageNet mini re-sharded raw, in the default encoding, and converted from raw: manifest
# counts, sizes on disk, and whether conversion gives the same tars.
#     bash benchmarks/reshard_tiny_imagenet.sh [OUT]     (default OUT: /tmp/ti)
set -e
mkdir -p "${1:-/tmp/ti}"
OUT=$(readlink -f "${1:-/tmp/ti}")
cd "$(dirname "$0")/.."
B=.venv/bin
printf 'data:\n  source: tiny-imagenet\n  url: file://%s\n' "$(readlink -f ../shared/datasets/tiny-imagenet-200-mini.zip)" > "$OUT/params.yaml"
rm -rf "$OUT"/raw "$OUT"/dl "$OUT"/shards*
$B/colorray fetch --params "$OUT/params.yaml" --out "$OUT/raw" --downloads "$OUT/dl"
echo "--- raw"
/usr/bin/time -f "%e s wall" $B/colorray shard --params "$OUT/params.yaml" --raw "$OUT/raw" --out "$OUT/shards-raw" \
    --encoding raw --compression none
echo "--- default (jpeg)"
/usr/bin/time -f "%e s wall" $B/colorray shard --params "$OUT/params.yaml" --raw "$OUT/raw" --out "$OUT/shards"
echo "--- converted from raw"
/usr/bin/time -f "%e s wall" $B/colorray shard --from "$OUT/shards-raw" --out "$OUT/shards-converted" --encoding jpeg
OUT="$OUT" $B/python - <<'PY'
import json, os, pathlib
out = pathlib.Path(os.environ["OUT"])
for name in ("shards-raw", "shards", "shards-converted"):
    d = out / name
    m = json.loads((d / "manifest.json").read_text())
    tars = sum(p.stat().st_size for p in d.iterdir() if p.name != "manifest.json")
    print(name, m["format"], "inputs", m["inputs"], "kept", m["kept"], "dropped", len(m["dropped"]),
          "outside_subset", m["outside_subset"], "ignored", len(m["ignored"]),
          "accounts:", m["inputs"] == m["kept"] + len(m["dropped"]) + m["outside_subset"],
          {s: (v["count"], len(v["shards"])) for s, v in m["splits"].items()}, f"{tars:,} bytes of tars")
same = all((out / "shards" / p.name).read_bytes() == p.read_bytes()
           for p in (out / "shards-converted").iterdir() if p.name != "manifest.json")
print("converted tars byte-identical to direct:", same)
PY
