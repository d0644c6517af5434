"""`python sample.py --help`: the same as `jaxcap sample` (jaxcap/commands/sample.py)."""

import sys

from jaxcap.commands import sample

if __name__ == "__main__":
  sys.exit(sample.main())
