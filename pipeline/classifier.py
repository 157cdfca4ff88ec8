"""DVC stage `classifier`: see colorray.evaluate."""
import sys

from colorray.cli import main

if __name__ == "__main__":
    main(["classifier", *sys.argv[1:]])
