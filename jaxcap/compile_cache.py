"""JAX's persistent compilation cache for the command-line tools (sample.py, serve.py).

Importing this module is cheap (no JAX), so a tool can use `DEFAULT_DIR` as a flag default
and still answer --help at once.
"""

from __future__ import annotations

import os

DEFAULT_DIR = os.environ.get("JAXCAP_CACHE_DIR",
                             os.path.join(os.path.expanduser("~"), ".cache", "jaxcap"))
HELP = ("JAX's persistent compilation cache (also $JAXCAP_CACHE_DIR); a second run with the "
        "same shapes skips compiling. '' turns it off")


def enable(cache_dir: str) -> None:
  """Keeps every compiled program under `cache_dir`/xla ('' leaves the cache off)."""
  if not cache_dir:
    return
  import jax  # pylint: disable=g-import-not-at-top
  jax.config.update("jax_compilation_cache_dir", os.path.join(cache_dir, "xla"))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
