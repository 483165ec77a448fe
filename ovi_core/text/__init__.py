"""Text side of Ovi: UMT5-XXL encoder, its tokenizer, and the prompt-format helper."""
