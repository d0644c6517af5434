"""`python train.py --config configs/quickstart.py --workdir DIR`: the same as `jaxcap train`
(jaxcap/commands/train.py)."""

from jaxcap.commands import train

if __name__ == "__main__":
  train.main()
