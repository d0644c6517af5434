"""`python serve.py --help`: the same as `jaxcap serve` (jaxcap/commands/serve.py)."""

import sys

from jaxcap.commands import serve

if __name__ == "__main__":
  sys.exit(serve.main())
