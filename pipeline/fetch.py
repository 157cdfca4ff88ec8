"""DVC stage `fetch`: download, verify and safely extract `data.source` into data/raw/."""
import sys

from colorray.cli import main

if __name__ == "__main__":
    main(["fetch", *sys.argv[1:]])
