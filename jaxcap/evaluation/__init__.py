"""Evaluation: caption metrics through pycocoevalcap (`metrics`), the PTB tokenizer they read
(`ptb_tokenizer`), captioning and scoring a split (`captioning`), attention figures
(`figures`)."""
