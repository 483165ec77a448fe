"""Which tensors of the fusion DiT are quantized, and to what; the rest stays in high precision.

Quantized: the 2-D Linear weights inside the fused blocks (``blocks.N.self_attn.*``, ``cross_attn.*``
including the fusion ``k_fusion``/``v_fusion``, ``ffn.0``/``ffn.2``), which hold 97 % of the parameters.
High precision: norms, biases, ``modulation`` tensors, the patch/text/time embeddings, the time projection
and the output head — as ComfyUI-GGUF does for Wan (1-D, <= 1024 values and ``.modulation`` in F32) and as
kijai's fp8 loader keeps them (``params_to_keep``: norm, bias, time_, patch_embedding, modulation,
text_embedding).
"""

from __future__ import annotations

import math
import re

import torch

from ovi_core.quant import ggml

_BLOCK_LINEAR = re.compile(r"^(video_model|audio_model)\.blocks\.\d+\.(self_attn|cross_attn|ffn)\.[A-Za-z0-9_.]+\.weight$")
SMALL = 1024  # ComfyUI-GGUF's QUANTIZATION_THRESHOLD

FORMATS = ("fp8", "fp8_scaled", "q8_0", "q6_k", "q4_k")
GGUF_FORMATS = {"q8_0": ggml.Q8_0, "q6_k": ggml.Q6_K, "q4_k": ggml.Q4_K}


def quantizable(name: str, shape: tuple[int, ...]) -> bool:
    """True for a fused-block Linear weight (2-D, more than 1024 values, not a norm)."""
    return (len(shape) == 2 and math.prod(shape) > SMALL and "norm" not in name
            and _BLOCK_LINEAR.match(name) is not None)


def gguf_type(name: str, shape: tuple[int, ...], source_dtype: torch.dtype, target: int) -> int:
    """GGML type a tensor gets in a GGUF of quantization ``target``.

    Block Linear weights get ``target`` when their rows split into whole blocks, else ``Q8_0`` when that
    fits, else F16; 1-D, small and ``modulation`` tensors F32; other tensors BF16 (bf16 source) or F16.
    """
    if quantizable(name, shape):
        for q in (target, ggml.Q8_0):
            if ggml.can_quantize(shape, q):
                return q
    if len(shape) <= 1 or math.prod(shape) <= SMALL or ".modulation" in name:
        return ggml.F32
    return ggml.BF16 if source_dtype == torch.bfloat16 else ggml.F16


__all__ = ["FORMATS", "GGUF_FORMATS", "quantizable", "gguf_type"]
