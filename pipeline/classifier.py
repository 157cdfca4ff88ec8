"""DVC stage `classifier`: see colorray.evaluate."""
import sys

from colorray.cli import main
from colorray.commands import classifier  # what this stage runs: dvc.yaml lists its imports as the stage's deps

if __name__ == "__main__":
    main(["classifier", *sys.argv[1:]], run=classifier.run)
