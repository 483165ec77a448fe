"""Text side of Ovi: UMT5-XXL encoder, its tokenizer, and the prompt-format helper."""

from ovi_core.text.prompt import ParsedPrompt, check_prompt, convert_prompt, parse_prompt, read_prompt_csv
from ovi_core.text.tokenizer import UMT5Tokenizer, clean_text, load_tokenizer
from ovi_core.text.umt5 import (
    UMT5_TINY,
    UMT5_XXL,
    TextEncoder,
    UMT5Config,
    full_size_shapes,
    load_text_encoder,
    shapes_for,
    umt5_config_from_shapes,
    write_tiny_text_encoder,
)

__all__ = [
    "ParsedPrompt",
    "TextEncoder",
    "UMT5Config",
    "UMT5Tokenizer",
    "UMT5_TINY",
    "UMT5_XXL",
    "check_prompt",
    "clean_text",
    "convert_prompt",
    "full_size_shapes",
    "load_text_encoder",
    "load_tokenizer",
    "parse_prompt",
    "read_prompt_csv",
    "shapes_for",
    "umt5_config_from_shapes",
    "write_tiny_text_encoder",
]
