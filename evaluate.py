"""`python evaluate.py --help`: the same as `jaxcap evaluate` (jaxcap/commands/evaluate.py)."""

import sys

from jaxcap.commands import evaluate

if __name__ == "__main__":
  sys.exit(evaluate.main())
