"""Stage 1 of the pipeline, text: a prompt and the two negative prompts -> :class:`Conditioning` (UMT5 embeddings).

The prompt's audio-caption format is converted to the model version's and checked here; the warnings travel with
the embeddings to the result.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

import torch

from ovi_core import sizes

logger = logging.getLogger(__name__)


@dataclass
class Conditioning:
    """UMT5 embeddings for one clip: ``[L, D]`` each, trimmed to their real token counts."""

    positive: torch.Tensor
    video_negative: torch.Tensor
    audio_negative: torch.Tensor
    prompt: str
    warnings: list[str] = field(default_factory=list)

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> Conditioning:
        f = lambda t: t.to(device=device, dtype=dtype or t.dtype)  # noqa: E731
        return replace(self, positive=f(self.positive), video_negative=f(self.video_negative),
                       audio_negative=f(self.audio_negative))


def encode_prompts(
    text_encoder,
    prompt: str,
    *,
    video_negative: str = sizes.DEFAULTS["video_negative_prompt"],
    audio_negative: str = sizes.DEFAULTS["audio_negative_prompt"],
    version: str | None = None,
) -> Conditioning:
    """Encode the prompt and the two negative prompts in one batch.

    The prompt's audio-caption format is converted to the model version's (``<AUDCAP>`` for 1.0,
    ``Audio:`` for 1.1); malformed speech/caption tags produce warnings (logged and returned).
    """
    from ovi_core.text.prompt import check_prompt, check_prompt_text, convert_prompt, mixed_caption_warning

    check_prompt_text(prompt)
    mixed = mixed_caption_warning(prompt)  # seen before the conversion makes both formats one
    if version is not None:
        prompt = convert_prompt(prompt, version="1.0" if version.startswith("1.0") else "1.1")
    warnings = check_prompt(prompt)
    if mixed is not None and mixed not in warnings:
        warnings.insert(0, mixed)
    tokenizer = getattr(text_encoder, "tokenizer", None)
    if tokenizer is not None and hasattr(tokenizer, "truncation_warning"):
        cut = tokenizer.truncation_warning(prompt)
        if cut is not None:
            warnings.append(cut)
    for w in warnings:
        logger.warning("prompt: %s", w)
    pos, vneg, aneg = text_encoder.encode([prompt, video_negative or "", audio_negative or ""])
    return Conditioning(pos, vneg, aneg, prompt, warnings)
