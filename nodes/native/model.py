"""Ovi as a native ComfyUI model: a ``supported_models_base.BASE`` config and ``OviModel(BaseModel)``.

Imported only inside ComfyUI (it subclasses ComfyUI classes). Registered by :func:`register` with a list
mutation of ``comfy.supported_models.models`` (inserted first, so an Ovi file is not taken for plain Wan2.2-5B);
nothing of ComfyUI is patched.

* Module tree (``ovi_core.model.rooted``): the video tower is the root of ``diffusion_model``, the audio tower is
  ``diffusion_model.audio_model``, so core LoRA loaders map ``diffusion_model.blocks.N...`` keys without a table.
* One LATENT holds both streams: a ``NestedTensor`` (video ``[B, 48, F, h, w]``, audio ``[B, 20, T]``) where ComfyUI
  has them (>= 0.3.67; BaseModel unpacks them with ``latent_shapes``), else the frame-packed tensor of
  ``ovi_core.sampling.packed``. Wan2.2's latent normalisation applies to the video stream only.
* A per-stream ``denoise_mask`` (0 = keep) becomes clean tokens (timestep 0), and the kept latent is used clean
  (``scale_latent_inpaint``): image->AV, audio->video, video->audio and redo are masks on the stock path.
* Skip-layer guidance: when ``transformer_options["ovi_slg_layer"]`` is set (``OviNativeGuider``), the rows of the
  negative (uncond) pass skip that fused layer inside the same forward, as the official code does.
* The audio negative prompt is the conditioning key ``ovi_audio_context`` (else the audio tower reads the video
  text).
"""

from __future__ import annotations

import logging

import comfy.conds
import comfy.latent_formats
import comfy.model_base
import comfy.patcher_extension
import comfy.supported_models
import comfy.supported_models_base
import comfy.utils
import torch

from ovi_core.model import rooted
from ovi_core.model.fusion import OviFusionModel
from ovi_core.quant.fp8 import FP8_DTYPES
from ovi_core.sampling import packed

from . import keys

logger = logging.getLogger(__name__)

SLG_KEY = "ovi_slg_layer"
AUDIO_CONTEXT_KEY = "ovi_audio_context"


def _nested():
    try:
        import comfy.nested_tensor as nt

        return nt
    except ImportError:
        return None


class OviLatentFormat(comfy.latent_formats.Wan22):
    """Wan2.2's per-channel normalisation (the video stream); :class:`OviModel` applies it to the video only."""


class OviDiT(rooted.OviRootedFusionModel):
    """The fusion DiT as ComfyUI's ``diffusion_model``: ``forward(x, timestep, context, ...)``."""

    def __init__(self, ovi_config=None, dtype=None, device=None, operations=None, **unused) -> None:
        if ovi_config is None:
            raise ValueError("OviDiT needs the fusion config (ovi_config); load the file with the Load Diffusion "
                             "Model node or bridge an Ovi model with OviModelToNative.")
        # built on meta, then given uninitialised storage: no random init of weights the file replaces (also the
        # only way to get float8 storage: torch cannot init float8 tensors), as ComfyUI's own ops skip init
        # layers from ComfyUI's operations (comfy.ops), so that ComfyUI can stream what does not fit (lowvram)
        super().__init__(ovi_config, device="meta", operations=operations)
        dev = torch.device(device) if device is not None else torch.device("cpu")
        if dev.type != "meta":
            _materialize(self, dev, dtype)
            keys.finish_comfy_layers(self, dev)
        self.dtype = dtype if dtype is not None else torch.float32

    def forward(self, x, timestep, context=None, control=None, transformer_options={}, **kwargs):  # noqa: B006
        ext = comfy.patcher_extension
        wrappers = ext.get_all_wrappers(ext.WrappersMP.DIFFUSION_MODEL, transformer_options)
        return ext.WrapperExecutor.new_class_executor(self._forward, self, wrappers).execute(
            x, timestep, context, transformer_options, **kwargs)

    def _forward(self, x, timestep, context, transformer_options, ovi_audio_context=None, ovi_video_mask=None,
                 ovi_audio_mask=None, **unused):
        nested_in = isinstance(x, (list, tuple))
        video, audio = (x[0], x[1]) if nested_in else packed.unpack(x)
        slg = int(transformer_options.get(SLG_KEY, -1))
        slg_mask = None
        rows = transformer_options.get("cond_or_uncond")
        if slg > 0 and rows:
            per = video.shape[0] // len(rows)
            slg_mask = torch.tensor([r == 1 for r in rows], dtype=torch.bool).repeat_interleave(per)
        elif slg > 0:
            slg = -1  # which rows are negative is unknown: no skip
        actx = ovi_audio_context if ovi_audio_context is not None else context
        v, a = rooted.forward_streams(self, video, audio, timestep, context, actx, slg_layer=slg, slg_mask=slg_mask,
                                      video_mask=ovi_video_mask, audio_mask=ovi_audio_mask)
        return [v, a] if nested_in else packed.pack(v, a)


def _materialize(module: torch.nn.Module, device: torch.device, dtype: torch.dtype | None) -> None:
    """Uninitialised storage on ``device`` for every meta tensor of ``module``, floating ones in ``dtype``; a weight a
    layer chose to keep in float8 itself (0.3.64's scaled-fp8 Linear, which would store its bias in float8 too) keeps
    float8, the bias gets ``dtype``."""
    for m in module.modules():
        for store in (m._parameters, m._buffers):
            for name, t in store.items():
                if t is None:
                    continue
                keep = not t.is_floating_point() or dtype is None or (name == "weight" and t.dtype in FP8_DTYPES)
                new = torch.empty(t.shape, device=device, dtype=t.dtype if keep else dtype)
                store[name] = torch.nn.Parameter(new, requires_grad=False) if isinstance(t, torch.nn.Parameter) else new


def _widen_unquantized(dit: torch.nn.Module, sd: dict) -> None:
    """A float8 weight slot (0.3.64's scaled-fp8 layers make every Linear float8) whose file tensor is not float8
    (kijai keeps the embeddings and head in bf16) gets the model's dtype, so loading does not round it to float8."""
    for k, v in sd.items():
        if not k.endswith(".weight") or v.dtype in FP8_DTYPES:
            continue
        mod = dit.get_submodule(k[: -len(".weight")])
        p = mod._parameters.get("weight")
        if p is not None and p.dtype in FP8_DTYPES:
            mod._parameters["weight"] = torch.nn.Parameter(torch.empty(p.shape, device=p.device, dtype=dit.dtype),
                                                           requires_grad=False)


class OviModel(comfy.model_base.BaseModel):
    """Native Ovi (both towers, one LATENT). See the module docstring."""

    def __init__(self, model_config, model_type=comfy.model_base.ModelType.FLOW, device=None):
        super().__init__(model_config, model_type, device=device, unet_model=OviDiT)

    # ---- latents: both streams, normalisation on the video only ----
    def _split(self, latent):
        """``(video, audio, repack)`` of a packed (nested/flat or frame-packed) latent."""
        shapes = getattr(self, "latent_shapes", None)
        if getattr(latent, "is_nested", False):
            nt = _nested()
            v, a = latent.unbind()
            return v, a, lambda v2, a2: nt.NestedTensor((v2, a2))
        if shapes is not None and len(shapes) > 1 and latent.ndim == 3:
            v, a = comfy.utils.unpack_latents(latent, shapes)
            return v, a, lambda v2, a2: comfy.utils.pack_latents([v2, a2])[0]
        v, a = packed.unpack(latent)
        return v, a, packed.pack

    def process_latent_in(self, latent):
        v, a, repack = self._split(latent)
        return repack(self.latent_format.process_in(v), a)

    def process_latent_out(self, latent):
        v, a, repack = self._split(latent)
        return repack(self.latent_format.process_out(v), a)

    def scale_latent_inpaint(self, sigma, noise, latent_image, **kwargs):
        return latent_image  # kept regions are clean latents at timestep 0 (Ovi's "clean" guides)

    # ---- conditioning ----
    def _pad_text(self, ctx: torch.Tensor) -> torch.Tensor:
        n = self.diffusion_model.config.video.text_len
        if ctx.ndim != 3:
            raise ValueError(f"Ovi text conditioning must be [B, L, D], got {list(ctx.shape)}")
        if ctx.shape[1] > n:
            raise ValueError(f"Ovi text conditioning has {ctx.shape[1]} tokens; the model reads at most {n}. Shorten "
                             "the prompt.")
        return torch.nn.functional.pad(ctx, (0, 0, 0, n - ctx.shape[1]))  # zero rows, as the model pads itself

    def extra_conds(self, **kwargs):
        out = {}
        ctx = kwargs.get("cross_attn")
        if ctx is not None:
            out["c_crossattn"] = comfy.conds.CONDRegular(self._pad_text(ctx))
            actx = kwargs.get(AUDIO_CONTEXT_KEY)
            out[AUDIO_CONTEXT_KEY] = comfy.conds.CONDRegular(self._pad_text(actx if actx is not None else ctx))
        shapes = kwargs.get("latent_shapes")
        if shapes is not None and len(shapes) > 1:
            out["latent_shapes"] = comfy.conds.CONDConstant(shapes)
        mask = kwargs.get("denoise_mask")
        if mask is not None:
            if shapes is not None and len(shapes) > 1:
                vm, am = comfy.utils.unpack_latents(mask, shapes)
            else:
                vm, am = packed.unpack(mask)
            out["ovi_video_mask"] = comfy.conds.CONDRegular(vm)
            out["ovi_audio_mask"] = comfy.conds.CONDRegular(am)
        return out

    # ---- context windows (ComfyUI >= 0.26) ----
    def map_context_window_to_modalities(self, primary_indices, latent_shapes, dim):
        """Video index ``v`` -> audio indices ``[round(v A / V), round((v + 1) A / V))``, in order."""
        result = [primary_indices]
        if len(latent_shapes) < 2:
            return result
        total = latent_shapes[0][dim]
        for shape in latent_shapes[1:]:
            n = shape[dim]
            idx, seen = [], set()
            for v in primary_indices:
                start = min(int(round(v * n / total)), n - 1)
                end = max(min(int(round((v + 1) * n / total)), n), start + 1)
                for i in range(start, end):
                    if i not in seen:
                        seen.add(i)
                        idx.append(i)
            result.append(idx)
        return result

    def resize_cond_for_context_window(self, cond_key, cond_value, window, x_in, device, retain_index_list=()):
        """The per-stream masks follow the window: the video mask by the window's frames, the audio mask by the audio
        window ``map_context_window_to_modalities`` made (both on dim 2)."""
        if cond_key not in ("ovi_video_mask", "ovi_audio_mask") or not isinstance(getattr(cond_value, "cond", None),
                                                                                   torch.Tensor):
            return None
        if cond_key == "ovi_video_mask":
            return cond_value._copy_with(window.get_tensor(cond_value.cond, device, dim=2,
                                                           retain_index_list=list(retain_index_list)))
        audio_window = (getattr(window, "modality_windows", None) or {}).get(1)
        if audio_window is None:
            return None
        return cond_value._copy_with(audio_window.get_tensor(cond_value.cond, device, dim=2))

    # ---- strict loading ----
    def load_model_weights(self, sd, unet_prefix="", assign=False):
        to_load = {k[len(unet_prefix):]: sd.pop(k) for k in list(sd) if k.startswith(unet_prefix)}
        to_load = self.model_config.process_unet_state_dict(to_load)
        missing, unexpected = keys.key_problems(self.diffusion_model, to_load)
        if missing or unexpected:
            raise ValueError(f"This Ovi file does not fit the model built from its shapes: {len(missing)} missing "
                             f"(e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]}). Use an "
                             "official Ovi file converted with `python -m ovi_core native-convert`, or load it with "
                             "OviFusionModelLoader and bridge it with OviModelToNative.")
        _widen_unquantized(self.diffusion_model, to_load)
        # strict=False: ComfyUI's quantized layer classes consume their scale tensors themselves; the names were
        # checked above, and whatever the layers leave unloaded is checked below
        result = self.diffusion_model.load_state_dict(to_load, strict=False, **({"assign": True} if assign else {}))
        problems = keys.unloaded(result)
        if problems:
            raise ValueError(f"Loading this Ovi file left {len(problems)} tensors unloaded (e.g. {problems[:3]}).")
        return self


class OviNative(comfy.supported_models_base.BASE):
    """Detection and settings of native Ovi: a fusion file in the rooted layout (video tower at the root with the
    fusion cross-attention keys, ``audio_model.*`` beside it)."""

    ovi_native = True  # marker: registration replaces entries carrying it (idempotent across reloads)
    unet_config = {"image_model": "ovi"}
    unet_extra_config = {}
    sampling_settings = {"shift": 5.0, "multiplier": 1000}
    latent_format = OviLatentFormat
    memory_usage_factor = 1.0
    supported_inference_dtypes = [torch.bfloat16, torch.float16, torch.float32]

    @classmethod
    def matches(cls, unet_config, state_dict=None, unet_key_prefix="", **kwargs):
        if state_dict is None:
            return False
        n = len(unet_key_prefix)
        return rooted.looks_rooted(k[n:] for k in state_dict if k.startswith(unet_key_prefix))

    def model_type(self, state_dict, prefix=""):
        return comfy.model_base.ModelType.FLOW

    def process_unet_state_dict(self, state_dict):
        """kijai's combined files name the block modulation ``blocks.N.modulation``; the rest is the rooted layout."""
        return keys.official_modulation(state_dict)

    def get_model(self, state_dict, prefix="", device=None):
        shapes = {k[len(prefix):]: tuple(v.shape) for k, v in state_dict.items() if k.startswith(prefix)}
        if not rooted.has_audio_tower(shapes):
            raise ValueError("This file is an Ovi video tower without its audio tower (kijai's split layout?). Load "
                             "both tower files with OviFusionModelLoader and bridge the model with OviModelToNative.")
        self.unet_config["ovi_config"] = rooted.rooted_config(shapes)
        return OviModel(self, device=device)

    def clip_target(self, state_dict=None):
        return None


def register() -> None:
    """Put :class:`OviNative` first in ``comfy.supported_models.models`` (once; a reload replaces the old entry)."""
    models = comfy.supported_models.models
    for m in [m for m in models if getattr(m, "ovi_native", False)]:
        models.remove(m)
    models.insert(0, OviNative)


def model_from_fusion(module: OviFusionModel, *, dtype: torch.dtype, device=None) -> OviModel:
    """A native :class:`OviModel` sharing the weights of a loaded fusion model (no copy)."""
    cfg = OviNative({"disable_unet_model_creation": True, "ovi_config": module.config, "dtype": dtype})
    model = OviModel(cfg, device=device)
    dit = OviDiT(module.config, dtype=dtype, device="meta")
    dit.share(module)
    model.diffusion_model = dit
    return model
