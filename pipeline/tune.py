"""DVC stage `tune`: Ray Tune sweep over Ray Train trials -> tune/best_params.yaml, results.csv."""
import sys

from colorray.cli import main
from colorray.commands import tune  # what this stage runs: dvc.yaml lists its imports as the stage's deps

if __name__ == "__main__":
    main(["tune", *sys.argv[1:]], run=tune.run)
