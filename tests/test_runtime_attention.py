"""The attention dispatcher: the load-time probe, the mid-run fallback to SDPA, and which kernel runs.

The kernels here are functions registered in the dispatcher's table (the dispatcher is what is tested); they
declare CPU/float32 support so the fast-path logic runs on a machine without a GPU."""

import logging

import pytest
import torch
import torch.nn.functional as F

from ovi_core.runtime import attention as at


def _sdpa(q, k, v):
    return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)


@pytest.fixture
def registered():
    names = []

    def register(name, fn):
        at.register_backend(name, fn, device_types=("cpu",), dtypes=(torch.float32,))
        names.append(name)

    yield register
    for n in names:
        at.unregister_backend(n)


def _qkv(seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(2, 7, 2, 16, generator=g), torch.randn(2, 9, 2, 16, generator=g),
            torch.randn(2, 9, 2, 16, generator=g))


def test_a_raising_backend_falls_back_to_sdpa_with_one_warning(registered, caplog):
    calls = []

    def broken(q, k, v):
        calls.append(1)
        raise RuntimeError("FlashAttention only supports Ampere GPUs or newer.")

    registered("fake_broken", broken)
    assert at.active_backend("fake_broken", "cpu", torch.float32) == "fake_broken"  # before the probe
    with caplog.at_level(logging.WARNING, logger=at.__name__):
        assert at.probe_backend("fake_broken", "cpu", torch.float32, heads=2, head_dim=16) == "sdpa"
        q, k, v = _qkv()
        out = at.attention(q, k, v, backend="fake_broken")
        at.attention(q, k, v, backend="fake_broken")
    assert torch.equal(out, at._sdpa(q, k, v, None))
    assert len(calls) == 1  # probed once, never called again
    assert at.active_backend("fake_broken", "cpu", torch.float32) == "sdpa"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "Ampere" in warnings[0].getMessage()


def test_a_working_backend_is_kept_and_used(registered):
    calls = []

    def good(q, k, v):
        calls.append(q.shape)
        return _sdpa(q, k, v)

    registered("fake_good", good)
    assert at.probe_backend("fake_good", "cpu", torch.float32, heads=2, head_dim=16) == "fake_good"
    q, k, v = _qkv()
    out = at.attention(q, k, v, backend="fake_good")
    assert calls[-1] == q.shape and torch.allclose(out, at._sdpa(q, k, v, None), atol=1e-6)
    assert at.active_backend("fake_good", "cpu", torch.float32) == "fake_good"
    # other devices / dtypes than the kernel declares: SDPA
    assert at.active_backend("fake_good", "cpu", torch.float64) == "sdpa"
    assert at.active_backend("fake_good", "meta", torch.float32) == "sdpa"
    n = len(calls)
    at.attention(q, k, v, backend="fake_good", k_lens=torch.tensor([9, 5]))  # key lengths: SDPA only
    assert len(calls) == n


def test_wrong_results_fail_the_probe(registered):
    registered("fake_wrong", lambda q, k, v: _sdpa(q, k, v) + 1.0)
    registered("fake_shape", lambda q, k, v: _sdpa(q, k, v)[:, :1])
    assert at.probe_backend("fake_wrong", "cpu", torch.float32, heads=2, head_dim=16) == "sdpa"
    assert at.probe_backend("fake_shape", "cpu", torch.float32, heads=2, head_dim=16) == "sdpa"


def test_a_failure_mid_run_falls_back_once(registered, caplog):
    state = {"n": 0}

    def flaky(q, k, v):
        state["n"] += 1
        if state["n"] > 1:
            raise RuntimeError("CUDA error: no kernel image is available for execution on the device")
        return _sdpa(q, k, v)

    registered("fake_flaky", flaky)
    q, k, v = _qkv()
    with caplog.at_level(logging.WARNING, logger=at.__name__):
        first = at.attention(q, k, v, backend="fake_flaky")
        second = at.attention(q, k, v, backend="fake_flaky")  # raises inside: SDPA instead
        at.attention(q, k, v, backend="fake_flaky")
    assert torch.allclose(first, second, atol=1e-6) and state["n"] == 2
    assert sum(r.levelno == logging.WARNING for r in caplog.records) == 1
    assert at.active_backend("fake_flaky", "cpu", torch.float32) == "sdpa"


def test_builtin_kernels_need_cuda_half():
    assert at.active_backend("sdpa", "cpu", torch.float32) == "sdpa"
    for name in ("flash_attn_2", "flash_attn_3", "xformers", "sage"):
        assert at.active_backend(name, "cpu", torch.bfloat16) == "sdpa"
        assert at.probe_backend(name, "cpu", torch.bfloat16) == "sdpa"
    with pytest.raises(ValueError, match="Unknown attention backend"):
        at.active_backend("nope")


def test_describe_backend_says_which_kernel_runs_and_why(registered):
    def broken(q, k, v):
        raise RuntimeError("no kernel image is available for execution on the device")

    registered("fake_ok", _sdpa)
    registered("fake_dead", broken)
    assert at.describe_backend("sdpa", "cpu", torch.float32) == "sdpa"
    assert at.describe_backend("fake_ok", "cpu", torch.float32) == "fake_ok"
    assert at.describe_backend("fake_ok", "cpu", torch.bfloat16) == "sdpa (fake_ok runs on cpu in float32 only)"
    assert at.describe_backend("fake_dead", "cpu", torch.float32) == "fake_dead"  # not tried yet
    q, k, v = _qkv()
    at.attention(q, k, v, backend="fake_dead")  # fails mid-run, falls back
    assert at.describe_backend("fake_dead", "cpu", torch.float32) == (
        "sdpa (fake_dead failed: RuntimeError: no kernel image is available for execution on the device)")
    if not at._installed("flash_attn_2"):
        assert at.describe_backend("flash_attn_2", "cpu", torch.float32) == "sdpa (flash_attn_2 is not installed)"
    else:
        assert at.describe_backend("flash_attn_2", "cpu", torch.float32).startswith("sdpa (flash_attn_2 runs on cuda")
