"""`colorray fetch` (DVC stage fetch): download, verify and extract data.source."""

from __future__ import annotations

from pathlib import Path

from colorray.config import load_params
from colorray.data.sources import fetch_source


def run(args) -> None:
    cfg = load_params(args.params).data
    record = fetch_source(cfg, Path(args.out), Path(args.downloads))
    for f in record["files"]:
        state = "verified" if f["verified"] else "not verified (no checksum known)"
        print(f"fetch: {f['name']} from {f['url'] or 'the installed package'}: {state}")
