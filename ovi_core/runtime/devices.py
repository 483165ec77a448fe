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


#: the oldest GPU generation that runs this model family: Ampere (sm_80) has bf16 tensor cores and the fused
#: (flash / memory-efficient) bf16 attention kernels
MIN_BF16_CAPABILITY = (8, 0)


def gpu_refusal(capability: tuple[int, int] | None, dtype: torch.dtype) -> str | None:
    """Why a CUDA GPU of compute ``capability`` cannot run the DiT in ``dtype``, or None when it can.

    Before Ampere (sm_70 V100, sm_75 T4 / RTX 20xx) PyTorch has no fused bf16 attention kernel, so SDPA takes
    the math path and materializes the ``[2, 24, L, L]`` score matrix (>= 21.6 GB per call at 704x704x121),
    and bf16 matmuls are emulated. fp16 overflows in this model family and fp32 needs 2x the memory of an
    already 21.7 GiB model. A pure function (tested on CPU); ``capability`` None means not a CUDA device.
    """
    if capability is None or tuple(capability) >= MIN_BF16_CAPABILITY:
        return None
    if dtype != torch.bfloat16:
        return None  # fp32 runs (slowly, memory permitting); fp16 is never chosen (pick_dtype upcasts it)
    cc = f"sm_{capability[0]}{capability[1]}"
    return (f"This GPU (compute capability {capability[0]}.{capability[1]}, {cc}) is older than Ampere: PyTorch "
            "has no fused bf16 attention kernel for it, so one attention call would need over 21 GB at 704x704 "
            "and bf16 matmuls are emulated. fp16 overflows in Ovi/Wan models. What works: an Ampere or newer "
            "NVIDIA GPU (RTX 30xx/40xx/50xx, A10/A40/A100/L4/L40/H100) with bf16, or the CPU (device cpu, "
            "fp32; very slow at full size).")


def check_gpu(device: torch.device, dtype: torch.dtype) -> None:
    """Raise ``ValueError`` (:func:`gpu_refusal`'s message) for a CUDA ``device`` that cannot run ``dtype``;
    call it before loading any weights."""
    if device.type != "cuda" or not torch.cuda.is_available():
        return
    why = gpu_refusal(torch.cuda.get_device_capability(device), dtype)
    if why:
        raise ValueError(why)
