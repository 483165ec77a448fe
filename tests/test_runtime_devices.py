"""Which GPUs can run the model: the pre-Ampere refusal, a pure function of (capability, dtype)."""

import torch

from ovi_core.runtime.devices import check_gpu, gpu_refusal, pick_dtype


def test_pre_ampere_bf16_is_refused_with_what_works():
    for cc in ((7, 0), (7, 5), (6, 1)):
        why = gpu_refusal(cc, torch.bfloat16)
        assert why and f"{cc[0]}.{cc[1]}" in why and "Ampere" in why and "fp16" in why and "cpu" in why


def test_ampere_and_newer_pass():
    for cc in ((8, 0), (8, 6), (8, 9), (9, 0), (10, 0), (12, 0)):
        assert gpu_refusal(cc, torch.bfloat16) is None
    assert gpu_refusal(None, torch.bfloat16) is None  # not CUDA
    assert gpu_refusal((7, 5), torch.float32) is None  # fp32 is slow there, but it runs


def test_check_gpu_is_a_no_op_off_cuda():
    check_gpu(torch.device("cpu"), pick_dtype(None, torch.device("cpu")))
    check_gpu(torch.device("meta"), torch.bfloat16)
