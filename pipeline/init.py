"""DVC stage `init`: train.init_from (a model file or an MLflow model URI) -> models/init.pt + init.json."""
import sys

from colorray.cli import main
from colorray.commands import init  # what this stage runs: dvc.yaml lists its imports as the stage's deps

if __name__ == "__main__":
    main(["init", *sys.argv[1:]], run=init.run)
