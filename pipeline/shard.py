"""DVC stage `shard`: data/raw/ -> webdataset shards + manifest.json in data/shards/."""
import sys

from colorray.cli import main

if __name__ == "__main__":
    main(["shard", *sys.argv[1:]])
