"""Shared test setup.

Keras (the reference implementation in parity tests) runs on the JAX backend, so the
tests need no TensorFlow.
"""
import os

os.environ.setdefault("KERAS_BACKEND", "jax")
