"""Agency side: normalization, tokens, the tokenizer and the published token schema."""
