"""Load the official Ovi ``FusionModel`` from an exported copy of ``character-ai/Ovi`` for CPU benchmarks.

Nothing of the official code lives in this repository: pass the folder that holds its ``ovi/`` package
(for example ``git --git-dir=MIRROR archive HEAD ovi | tar -x -C /work/ovi-official``). Following
OVI_REFERENCE.md section 8, the package ``__init__`` (which needs CUDA at import) is bypassed, diffusers'
mixins are stubbed when diffusers is absent, and both modules' ``flash_attention`` are replaced by an SDPA
function with the same signature, the same kernel our model uses on CPU.
"""

from __future__ import annotations

import importlib
import os
import sys
import types

import torch
import torch.nn.functional as F
from torch import nn


def sdpa_flash_attention(q, k, v, q_lens=None, k_lens=None, dropout_p=0.0, softmax_scale=None, q_scale=None,
                         causal=False, window_size=(-1, -1), deterministic=False, dtype=torch.bfloat16, version=None):
    """The official ``flash_attention`` signature on ``[B, L, H, D]``, computed by SDPA (keys >= k_lens masked)."""
    mask = None
    if k_lens is not None:
        mask = (torch.arange(k.shape[1], device=k.device)[None, :] < k_lens.to(k.device)[:, None])[:, None, None, :]
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask,
                                         scale=softmax_scale, is_causal=causal)
    return out.transpose(1, 2).to(q.dtype)


def _stub_diffusers() -> None:
    try:
        importlib.import_module("diffusers.configuration_utils")
        return
    except ImportError:
        pass

    def register_to_config(fn):
        return fn

    class ConfigMixin:
        pass

    class ModelMixin(nn.Module):
        pass

    pkg = types.ModuleType("diffusers")
    pkg.__path__ = []
    cfg = types.ModuleType("diffusers.configuration_utils")
    cfg.ConfigMixin, cfg.register_to_config = ConfigMixin, register_to_config
    models = types.ModuleType("diffusers.models")
    models.__path__ = []
    mu = types.ModuleType("diffusers.models.modeling_utils")
    mu.ModelMixin = ModelMixin
    for name, mod in (("diffusers", pkg), ("diffusers.configuration_utils", cfg), ("diffusers.models", models),
                      ("diffusers.models.modeling_utils", mu)):
        sys.modules.setdefault(name, mod)


def load_official(path: str):
    """Import ``ovi.modules.fusion`` from ``path`` (the folder holding ``ovi/``); return the module."""
    root = os.path.join(path, "ovi")
    if not os.path.isfile(os.path.join(root, "modules", "fusion.py")):
        raise FileNotFoundError(f"{path} does not hold the official code (expected ovi/modules/fusion.py there)")
    _stub_diffusers()
    for name, sub in (("ovi", root), ("ovi.modules", os.path.join(root, "modules"))):
        if name not in sys.modules:
            mod = types.ModuleType(name)
            mod.__path__ = [sub]  # a namespace without running the package __init__ (it needs CUDA)
            sys.modules[name] = mod
    model = importlib.import_module("ovi.modules.model")
    fusion = importlib.import_module("ovi.modules.fusion")
    model.flash_attention = sdpa_flash_attention
    fusion.flash_attention = sdpa_flash_attention
    return fusion


def official_twin(ours, path: str):
    """The official ``FusionModel`` with the same config and weights as our ``OviFusionModel`` (bf16, eval)."""
    fusion = load_official(path)
    cfg = ours.config
    vcfg, acfg = cfg.video.to_dict(), cfg.audio.to_dict()
    with torch.device("meta"):
        ref = fusion.FusionModel(video_config=vcfg, audio_config=acfg)
    ref = ref.to_empty(device="cpu")
    ref.load_state_dict(ours.state_dict(), strict=True)
    ref.video_model.set_rope_params()
    ref.audio_model.set_rope_params()
    return ref.to(torch.bfloat16).eval()
