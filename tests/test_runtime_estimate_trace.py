"""Issue 20 item 6d: a full-size trace on the ``meta`` device (no weights, no memory) checks that the activation
estimate :func:`ovi_core.runtime.estimate.activation_bytes` (what the nodes pass ComfyUI as ``memory_required``)
covers the traced peak of one batched-CFG forward of the 11.66 B DiT at 704²×121, 960²×121 and 960²×241.

The tracer counts every storage a non-aliasing op creates while it is alive (freed when its last tensor or view
goes), so the cached text keys/values and the RoPE tables built in the forward are counted too. Attention is a
flash-like kernel (registered for the meta device through the dispatcher's ``register_backend``) that allocates
only its output, as the CUDA kernels do; RoPE runs its eager complex form (the CUDA fallback, the larger peak).
"""

from __future__ import annotations

import weakref

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from ovi_core.model import rope
from ovi_core.model.config import OVI_11B
from ovi_core.model.fusion import OviFusionModel
from ovi_core.runtime import attention as attn
from ovi_core.runtime.estimate import activation_bytes, dit_tokens

GIB = 1 << 30
SLG_LAYER = 11  # the sampler's default skip layer (sampling.settings)


class LiveBytes(TorchDispatchMode):
    """Live bytes of the storages made under the mode, and their peak."""

    def __init__(self):
        super().__init__()
        self.live = self.peak = 0

    def _free(self, n: int) -> None:
        self.live -= n

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        returns = func._schema.returns
        for j, t in enumerate(out if isinstance(out, (tuple, list)) else (out,)):
            if not isinstance(t, torch.Tensor) or (j < len(returns) and returns[j].alias_info is not None):
                continue  # views and in-place results share a storage counted already
            s = t.untyped_storage()  # one Python object per storage: freed when its last tensor goes
            self.live += s.nbytes()
            self.peak = max(self.peak, self.live)
            weakref.finalize(s, self._free, s.nbytes())
        return out


def _flash_like(q, k, v):
    return torch.empty(q.shape[:-1] + v.shape[-1:], dtype=q.dtype, device=q.device)  # [B, Lq, H, Dv]


@pytest.fixture(scope="module")
def model():
    m = OviFusionModel(OVI_11B, device="meta", dtype=torch.bfloat16).eval()
    attn.register_backend("flash_attn_2", _flash_like, device_types=("meta",), dtypes=(torch.bfloat16,))
    m.attention_backend = "flash_attn_2"
    yield m
    attn.unregister_backend("flash_attn_2")


def traced_peak(model: OviFusionModel, frames: int, h: int, w: int, audio_len: int) -> int:
    """Peak live bytes of one forward over 2 rows (positive + negative prompt, skip layer on the negative row)
    with the run's text cache, as the sampler's first step runs it."""
    meta = torch.device("meta")
    video = torch.empty(2, 48, frames, h, w, device=meta)
    audio = torch.empty(2, audio_len, 20, device=meta)
    ctx = [torch.empty(300, OVI_11B.video.text_dim, device=meta), torch.empty(120, OVI_11B.video.text_dim,
                                                                                device=meta)]
    rope.clear_caches()  # tables built during the forward are counted
    tracer = LiveBytes()
    with torch.no_grad(), model.cache_text_embeddings(), tracer:
        model(video, audio, torch.full((2,), 900.0, device=meta), ctx, ctx, slg_layer=SLG_LAYER,
              slg_mask=torch.tensor([False, True]))
    rope.clear_caches()
    return tracer.peak


@pytest.mark.parametrize("version,side", [("1.0", 704), ("1.1", 960), ("1.1-10s", 960)])
def test_activation_estimate_covers_the_traced_full_size_peak(model, version, side, record_property):
    from ovi_core import sizes

    spec = sizes.get_spec(version)
    lat = side // sizes.SPATIAL_DOWNSAMPLE
    peak = traced_peak(model, spec.video_latent_frames, lat, lat, spec.audio_latent_length)
    est = activation_bytes(dit_tokens(side, side, version=version), rows=2)
    record_property("traced_gib", round(peak / GIB, 3))
    record_property("estimate_gib", round(est / GIB, 3))
    print(f"{side}²×{spec.frames}: traced {peak / GIB:.2f} GiB, estimate {est / GIB:.2f} GiB")
    assert peak > GIB  # the trace saw the forward (full-size activations are GiBs)
    assert est >= peak, f"estimate {est / GIB:.2f} GiB < traced {peak / GIB:.2f} GiB"
    assert est <= 1.25 * peak  # and it does not ask ComfyUI for far more than the forward uses
