"""`python -m imdb_ray ...`: the command line (imdb_ray/cli/)."""
import sys

from imdb_ray.cli import build_parser, main

__all__ = ["build_parser", "main"]

if __name__ == "__main__":
    sys.exit(main())
