"""`python -m jaxcap COMMAND ...`: the same as the `jaxcap` console script (jaxcap/cli.py)."""

import sys

from jaxcap import cli

if __name__ == "__main__":
  sys.exit(cli.main())
