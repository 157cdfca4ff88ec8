"""DVC stage `train`: Ray Train data-parallel GAN training -> models/, metrics/, MLflow run."""
import sys

from colorray.cli import main
from colorray.commands import train  # what this stage runs: dvc.yaml lists its imports as the stage's deps

if __name__ == "__main__":
    main(["train", *sys.argv[1:]], run=train.run)
