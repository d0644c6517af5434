"""Shared test setup.

Keras (the reference implementation in parity tests) runs on the JAX backend, so the
tests need no TensorFlow.
"""
import os

import pytest

os.environ.setdefault("KERAS_BACKEND", "jax")


@pytest.fixture(scope="session")
def java():
  """Fails the test without a working `java` (pycocoevalcap's PTB tokenizer and METEOR run on
  it), unless JAXCAP_ALLOW_NO_JAVA=1, which skips it."""
  from jaxcap.evaluation import ptb_tokenizer  # pylint: disable=g-import-not-at-top
  if not ptb_tokenizer.java_available():
    if os.environ.get("JAXCAP_ALLOW_NO_JAVA") == "1":
      pytest.skip("no working java (JAXCAP_ALLOW_NO_JAVA=1)")
    pytest.fail("these tests need a working `java` on PATH (pycocoevalcap's PTB tokenizer and "
                "METEOR run on it); set JAXCAP_ALLOW_NO_JAVA=1 to skip them")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
  # One persistent compilation cache for the many short runs of this module: each run then
  # compiles nothing twice.
  return dict(os.environ, JAX_COMPILATION_CACHE_DIR=str(tmp_path_factory.mktemp("xla")),
              JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
