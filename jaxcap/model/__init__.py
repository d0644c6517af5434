"""The model: pure-function layers (`layers`), the decoders (`decoders`: one module per
decoder behind one interface) and the frozen ImageNet encoders (`encoders`)."""
