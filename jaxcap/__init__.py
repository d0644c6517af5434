"""jaxcap: image captioning in JAX/Flax."""
