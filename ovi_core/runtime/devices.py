"""Devices and precision: where a run computes (``auto`` -> CUDA when present) and in which dtype."""

from __future__ import annotations

import logging

import torch

logger = logging.getLogger(__name__)


def pick_device(device: str | torch.device | None = "auto") -> torch.device:
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def pick_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """Compute dtype: bf16 on GPUs, fp32 on CPU by default. fp16 overflows in this model family and is
    refused with a warning (upcast to bf16)."""
    if dtype is None or dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, str):
        table = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16,
                 "fp32": torch.float32, "float32": torch.float32}
        if dtype not in table:
            raise ValueError(f"Unknown precision {dtype!r}; use bf16, fp32 or auto.")
        dtype = table[dtype]
    if dtype == torch.float16:
        logger.warning("fp16 overflows in Ovi/Wan models (black or noise output); computing in bf16 instead.")
        return torch.bfloat16
    return dtype
