"""DVC stage `baseline`: see colorray.evaluate."""
import sys

from colorray.cli import main
from colorray.commands import baseline  # what this stage runs: dvc.yaml lists its imports as the stage's deps

if __name__ == "__main__":
    main(["baseline", *sys.argv[1:]], run=baseline.run)
