"""The tensor names a native Ovi file may carry, checked strictly, whichever ComfyUI layer classes load them.

Sources of names besides the rooted layout itself (``ovi_core.model.rooted``):

* kijai's combined file (ComfyUI-WanVideoWrapper, e.g. ``Wan2_2-5B-Ovi_960x960_10s_fp8_e4m3fn_scaled_KJ``) is the
  rooted layout with the block modulation as ``blocks.N.modulation`` (the official name is
  ``blocks.N.modulation.modulation``): :func:`official_modulation` renames it;
* scaled-fp8 and mixed-precision files add per-Linear quantization tensors that ComfyUI's own layer classes read
  (0.3.64 ``scaled_fp8_ops``: ``scale_weight``/``scale_input``; newer ``mixed_precision_ops`` after
  ``convert_old_quants``: ``weight_scale``, ``input_scale``, ``comfy_quant``...): accepted on Linears only;
* some layer classes create their tensors only at load (ComfyUI-GGUF's ``GGMLOps.Linear``, core's
  ``MixedPrecisionOps.Linear``): their weight and bias are still required (every Ovi Linear has a bias).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

import torch

_KIJAI_MODULATION = re.compile(r"^(audio_model\.)?blocks\.\d+\.modulation$")
#: per-Linear tensors of ComfyUI's quantized layer classes; the first two are created with a default (1.0) by
#: 0.3.64's scaled-fp8 layers, so a file may lack them
QUANT_EXTRAS = (".scale_weight", ".scale_input", ".weight_scale", ".weight_scale_2", ".input_scale",
                ".pre_quant_scale", ".comfy_quant")
DEFAULTED = (".scale_weight", ".scale_input")


def official_modulation(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``sd`` with kijai's ``blocks.N.modulation`` renamed to ``blocks.N.modulation.modulation`` (tensors shared)."""
    return {(k + ".modulation" if _KIJAI_MODULATION.match(k) else k): v for k, v in sd.items()}


def _linears(dit: torch.nn.Module) -> set[str]:
    return {name for name, m in dit.named_modules() if name and hasattr(m, "in_features") and hasattr(m, "out_features")}


def key_problems(dit: torch.nn.Module, keys: Iterable[str]) -> tuple[list[str], list[str]]:
    """``(missing, unexpected)`` names of a state dict ``keys`` for the native DiT ``dit`` (module docstring)."""
    keys = set(keys)
    linears = _linears(dit)
    want = set(dit.state_dict())
    for name in linears:
        want.update((f"{name}.weight", f"{name}.bias"))

    def extra(k: str) -> bool:
        return k.endswith(QUANT_EXTRAS) and k.rsplit(".", 1)[0] in linears

    missing = sorted(k for k in want - keys if not (k.endswith(DEFAULTED) and extra(k)))
    unexpected = sorted(k for k in keys - want if not extra(k))
    return missing, unexpected


def finish_comfy_layers(dit: torch.nn.Module, device: torch.device) -> None:
    """What ComfyUI's layer classes set up when built on the real device, for a DiT built on ``meta`` and then given
    storage on ``device``: the device their loaders put the weights and scales on (``factory_kwargs`` of 0.33's
    mixed-precision Linear), and the default 1.0 of 0.3.64's scaled-fp8 scales (a file without them keeps it)."""
    for m in dit.modules():
        factory = getattr(m, "factory_kwargs", None)
        if isinstance(factory, dict) and "device" in factory:
            factory["device"] = device
        for name in ("scale_weight", "scale_input"):
            t = getattr(m, name, None)
            if isinstance(t, torch.Tensor) and t.device.type != "meta":
                with torch.no_grad():
                    t.fill_(1.0)


def unloaded(result) -> list[str]:
    """What ``load_state_dict(strict=False)`` reported (its ``result``) that is a real problem: a missing tensor
    other than a defaulted scale, or an unused name."""
    return [k for k in result.missing_keys if not k.endswith(DEFAULTED)] + list(result.unexpected_keys)


__all__ = ["official_modulation", "key_problems", "finish_comfy_layers", "unloaded", "QUANT_EXTRAS"]
