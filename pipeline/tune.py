"""DVC stage `tune`: Ray Tune sweep over Ray Train trials -> tune/best_params.yaml, results.csv."""
import sys

from colorray.cli import main

if __name__ == "__main__":
    main(["tune", *sys.argv[1:]])
