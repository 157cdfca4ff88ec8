"""DVC stage `evaluate`: see colorray.evaluate."""
import sys

from colorray.cli import main
from colorray.commands import evaluate  # what this stage runs: dvc.yaml lists its imports as the stage's deps

if __name__ == "__main__":
    main(["evaluate", *sys.argv[1:]], run=evaluate.run)
