"""DVC stage `fetch`: download, verify and safely extract `data.source` into data/raw/."""
import sys

from colorray.cli import main
from colorray.commands import fetch  # what this stage runs: dvc.yaml lists its imports as the stage's deps

if __name__ == "__main__":
    main(["fetch", *sys.argv[1:]], run=fetch.run)
