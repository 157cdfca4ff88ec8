"""DVC stage `evaluate`: see colorray.evaluate."""
import sys

from colorray.cli import main

if __name__ == "__main__":
    main(["evaluate", *sys.argv[1:]])
