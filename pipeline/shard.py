"""DVC stage `shard`: data/raw/ -> webdataset shards + manifest.json in data/shards/."""
import sys

from colorray.cli import main
from colorray.commands import shard  # what this stage runs: dvc.yaml lists its imports as the stage's deps

if __name__ == "__main__":
    main(["shard", *sys.argv[1:]], run=shard.run)
