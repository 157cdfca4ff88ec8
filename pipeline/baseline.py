"""DVC stage `baseline`: see colorray.evaluate."""
import sys

from colorray.cli import main

if __name__ == "__main__":
    main(["baseline", *sys.argv[1:]])
