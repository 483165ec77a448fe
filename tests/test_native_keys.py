"""Which tensor names a native Ovi file may carry (``nodes/native/keys.py``), with layer classes shaped like the ones
ComfyUI and ComfyUI-GGUF build (the loaders themselves run in tests/test_native_host_loaders.py on both hosts)."""

from __future__ import annotations

import torch
from torch import nn

from nodes.native import keys


class TensorlessLinear(nn.Linear):
    """Shaped like ComfyUI-GGUF's ``GGMLOps.Linear`` (ops.py @795e451): no tensors until the file is loaded."""

    def __init__(self, in_features, out_features, bias=True, device=None, dtype=None):
        nn.Module.__init__(self)
        self.in_features, self.out_features = in_features, out_features
        self.weight = None
        self.bias = None


class ScaledLinear(nn.Linear):
    """Shaped like 0.3.64's scaled-fp8 Linear: a ``scale_weight`` and ``scale_input`` beside the weight."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.scale_weight = nn.Parameter(torch.empty(()), requires_grad=False)
        self.scale_input = nn.Parameter(torch.empty(()), requires_grad=False)
        self.factory_kwargs = {"device": "meta", "dtype": torch.float32}


def _dit(linear=nn.Linear):
    dit = nn.Module()
    dit.blocks = nn.ModuleList([nn.Module()])
    dit.blocks[0].q = linear(4, 4)
    dit.blocks[0].norm = nn.LayerNorm(4)
    dit.blocks[0].modulation = nn.Module()
    dit.blocks[0].modulation.modulation = nn.Parameter(torch.zeros(1, 6, 4))
    return dit


FULL = {"blocks.0.q.weight", "blocks.0.q.bias", "blocks.0.norm.weight", "blocks.0.norm.bias",
        "blocks.0.modulation.modulation"}


def test_kijai_modulation_is_renamed_and_nothing_else():
    sd = {"blocks.3.modulation": 1, "audio_model.blocks.0.modulation": 2, "blocks.0.modulation.modulation": 3,
          "head.modulation": 4, "blocks.1.self_attn.q.weight": 5}
    assert keys.official_modulation(sd) == {"blocks.3.modulation.modulation": 1,
                                            "audio_model.blocks.0.modulation.modulation": 2,
                                            "blocks.0.modulation.modulation": 3, "head.modulation": 4,
                                            "blocks.1.self_attn.q.weight": 5}


def test_strict_names_with_plain_and_tensorless_linears():
    for linear in (nn.Linear, TensorlessLinear):
        dit = _dit(linear)
        assert keys.key_problems(dit, FULL) == ([], [])
        assert keys.key_problems(dit, FULL - {"blocks.0.q.weight"}) == (["blocks.0.q.weight"], [])
        assert keys.key_problems(dit, FULL | {"blocks.0.extra.weight"}) == ([], ["blocks.0.extra.weight"])


def test_quantization_tensors_only_on_linears():
    dit = _dit()
    extras = {"blocks.0.q.weight_scale", "blocks.0.q.comfy_quant", "blocks.0.q.input_scale"}
    assert keys.key_problems(dit, FULL | extras) == ([], [])
    assert keys.key_problems(dit, FULL | {"blocks.0.norm.weight_scale"}) == ([], ["blocks.0.norm.weight_scale"])


def test_scaled_layers_may_lack_their_defaulted_scales():
    dit = _dit(ScaledLinear)
    assert keys.key_problems(dit, FULL) == ([], [])  # the file has no scale: the layer's default 1.0 stays
    assert keys.key_problems(dit, FULL | {"blocks.0.q.scale_weight"}) == ([], [])
    dit.to_empty(device="cpu")
    keys.finish_comfy_layers(dit, torch.device("cpu"))
    q = dit.blocks[0].q
    assert q.scale_weight.item() == 1.0 and q.scale_input.item() == 1.0
    assert q.factory_kwargs["device"] == torch.device("cpu")
