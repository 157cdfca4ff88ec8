"""DVC stage `train`: Ray Train data-parallel GAN training -> models/, metrics/, MLflow run."""
import sys

from colorray.cli import main

if __name__ == "__main__":
    main(["train", *sys.argv[1:]])
