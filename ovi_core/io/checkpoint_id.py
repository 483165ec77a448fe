"""Recognising what a checkpoint file is from its tensor names and shapes (:func:`identify`).

Every component loader calls :func:`identify` so that a wrong file is recognised early and the error says what
it appears to be (a LoRA, the Ovi fusion DiT or one tower, a plain Wan DiT, the Wan2.1/2.2 VAE, UMT5/T5, the
MMAudio VAE, BigVGAN, or unknown). Reading files lives in :mod:`ovi_core.io.checkpoints`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class TensorInfo:
    """Shape and dtype of one tensor, as a file header states them."""

    shape: tuple[int, ...]
    dtype: torch.dtype


@dataclass
class Identification:
    """What a checkpoint file appears to be."""

    component: str  # 'ovi-fusion', 'wan2.2-vae', 'umt5-xxl', 'mmaudio-vae-16k', 'bigvgan-16k', ... or 'unknown'
    description: str
    version: str | None = None
    dtype: str | None = None
    num_params: int = 0
    notes: list[str] = field(default_factory=list)
    compatible: bool = True


def _dominant_dtype(infos: Mapping[str, TensorInfo]) -> str:
    counts: dict[str, int] = {}
    for t in infos.values():
        n = 1
        for s in t.shape:
            n *= s
        name = str(t.dtype).replace("torch.", "")
        counts[name] = counts.get(name, 0) + n
    return max(counts, key=counts.get) if counts else "unknown"


def _num_params(infos: Mapping[str, TensorInfo]) -> int:
    total = 0
    for t in infos.values():
        n = 1
        for s in t.shape:
            n *= s
        total += n
    return total


def fusion_version_from_name(path: str | None) -> str | None:
    if not path:
        return None
    name = os.path.basename(path).lower()
    if "dreamid" in name:  # DreamID-Omni: 704x1280 (the 960x960 area), 121 frames, 157 audio latents = Ovi 1.1's 5 s
        return "1.1"
    if "960x960_10s" in name or "10s" in name:
        return "1.1-10s"
    if "960" in name:
        return "1.1"
    if name in ("model.safetensors",) or "fp8" in name or "720" in name:
        return "1.0"
    return None


# a LoRA tensor: ComfyUI/kohya ``lora_down``/``lora_up``, PEFT ``lora_A``/``lora_B`` (optionally ``.default``),
# ``lora.down``/``lora.up``, and the full-difference patches ``.diff``/``.diff_b`` of some Wan LoRAs
_LORA_KEY = re.compile(r"(\.|_)(lora_down|lora_up|lora_A|lora_B|lora\.down|lora\.up)(\.default)?\.weight$|\.diff(_b)?$")


def _identify_lora(infos: Mapping[str, TensorInfo], lora_keys: list[str], *, dtype: str,
                   nparams: int) -> Identification:
    towers = sorted({k.split(".", 1)[0] for k in lora_keys if k.startswith(("video_model.", "audio_model."))})
    ranks = sorted({infos[k].shape[0] for k in lora_keys if re.search(r"(lora_down|lora_A|lora\.down)", k)
                    and len(infos[k].shape) == 2})
    rank = f"rank {ranks[0]}" if len(ranks) == 1 else (f"ranks {ranks[0]}-{ranks[-1]}" if ranks else "no rank")
    n_layers = len({_LORA_KEY.split(k)[0] for k in lora_keys})
    if towers:
        desc = f"LoRA for the Ovi fusion DiT ({', '.join(towers)}; {n_layers} layers, {rank})"
    else:
        desc = f"LoRA weights ({n_layers} layers, {rank}; not in Ovi's video_model/audio_model layout)"
    return Identification("lora", desc, dtype=dtype, num_params=nparams)


def identify(infos: Mapping[str, TensorInfo], *, path: str | None = None) -> Identification:
    """Recognise a checkpoint from its tensor names and shapes."""
    keys = set(infos)
    dtype = _dominant_dtype(infos)
    nparams = _num_params(infos)

    def has(*names: str) -> bool:
        return all(n in keys for n in names)

    def shape(name: str) -> tuple[int, ...] | None:
        return infos[name].shape if name in infos else None

    # --- LoRA (first: its keys carry the model's module names, e.g. video_model.blocks.0...) ---
    lora_keys = [k for k in keys if _LORA_KEY.search(k)]
    if lora_keys:
        return _identify_lora(infos, lora_keys, dtype=dtype, nparams=nparams)

    # --- Ovi fusion model (both towers, or one tower) ---
    has_video = any(k.startswith("video_model.") for k in keys)
    has_audio = any(k.startswith("audio_model.") for k in keys)
    if has_video or has_audio:
        fusion = any("k_fusion" in k for k in keys)
        version = fusion_version_from_name(path)
        if has_video and has_audio:
            comp, desc = "ovi-fusion", "Ovi fusion DiT (video + audio towers)"
        elif has_video:
            comp, desc = "ovi-video-tower", "Ovi video tower only"
        else:
            comp, desc = "ovi-audio-tower", "Ovi audio tower only"
        ident = Identification(comp, desc, version=version, dtype=dtype, num_params=nparams)
        if not fusion:
            ident.notes.append("no cross-modal fusion layers (k_fusion/v_fusion): not an Ovi checkpoint")
            ident.compatible = False
        if "float8" in dtype:
            ident.notes.append("fp8 weights (kept fp8 in memory, upcast per layer at compute time)")
        if version is None:
            ident.notes.append("1.0 and 1.1 share shapes; version taken from the file name when it says")
        return ident
    if any(k.startswith("blocks.0.cross_attn.k_fusion") for k in keys):
        pe = shape("patch_embedding.weight")
        comp = "ovi-video-tower" if pe is not None and len(pe) == 5 else "ovi-audio-tower"
        return Identification(comp, f"Ovi {comp.split('-')[1]} tower without prefix", dtype=dtype, num_params=nparams)
    if has("blocks.0.modulation", "patch_embedding.weight", "head.head.weight"):
        pe = shape("patch_embedding.weight")
        what = "Wan2.2 TI2V-5B DiT" if pe and pe[1] == 48 else "Wan2.x DiT"
        return Identification(
            "wan-dit",
            f"{what} (plain Wan video model, not Ovi)",
            dtype=dtype,
            num_params=nparams,
            compatible=False,
            notes=["Ovi needs its own fusion checkpoint (chetwinlow1/Ovi model.safetensors)"],
        )

    # --- Wan VAE ---
    if has("encoder.conv1.weight", "decoder.conv1.weight", "conv1.weight", "conv2.weight"):
        z = shape("conv2.weight")[0]
        if z == 48:
            return Identification("wan2.2-vae", "Wan2.2 VAE (z 48, 16x spatial)", dtype=dtype, num_params=nparams)
        return Identification(
            "wan2.1-vae",
            f"Wan2.1 VAE (z {z}, 8x spatial)",
            dtype=dtype,
            num_params=nparams,
            compatible=False,
            notes=["Ovi uses the Wan2.2 VAE (Wan2.2_VAE.pth, z 48); the Wan2.1 VAE does not fit"],
        )

    # --- UMT5 / T5 text encoders ---
    if has("token_embedding.weight", "blocks.0.attn.q.weight"):
        vocab, dim = shape("token_embedding.weight")
        per_layer = "blocks.1.pos_embedding.embedding.weight" in keys or len(
            [k for k in keys if k.endswith("pos_embedding.embedding.weight")]
        ) > 1
        if vocab == 256384 or per_layer:
            return Identification("umt5-xxl", f"UMT5 encoder, Wan layout (vocab {vocab}, dim {dim})", dtype=dtype,
                                  num_params=nparams, version="wan")
        return Identification("t5", f"T5 encoder, Wan layout (vocab {vocab})", dtype=dtype, num_params=nparams,
                              compatible=False, notes=["Ovi needs UMT5-XXL (per-layer position bias)"])
    hf_q = "encoder.block.0.layer.0.SelfAttention.q.weight"
    if hf_q in keys or "block.0.layer.0.SelfAttention.q.weight" in keys:
        prefix = "encoder." if hf_q in keys else ""
        per_layer = f"{prefix}block.1.layer.0.SelfAttention.relative_attention_bias.weight" in keys
        emb = shape("shared.weight") or shape("encoder.embed_tokens.weight") or shape("embed_tokens.weight")
        vocab = emb[0] if emb else None
        if per_layer or vocab == 256384:
            return Identification("umt5-xxl", f"UMT5 encoder, Hugging Face layout (vocab {vocab})", dtype=dtype,
                                  num_params=nparams, version="hf")
        return Identification(
            "t5",
            f"T5 encoder, Hugging Face layout (vocab {vocab}; shared position bias)",
            dtype=dtype,
            num_params=nparams,
            compatible=False,
            notes=["this looks like t5xxl (Flux/SD3), not umt5_xxl; Ovi needs umt5_xxl_*.safetensors"],
        )

    # --- MMAudio VAE ---
    if has("data_mean", "data_std", "encoder.conv_in.weight", "decoder.conv_out.weight"):
        mel = shape("data_mean")[1]
        ok = mel == 80
        return Identification(
            "mmaudio-vae-16k" if ok else "mmaudio-vae",
            f"MMAudio audio VAE ({mel} mel bins{', 16 kHz' if ok else ', 44.1 kHz'})",
            dtype=dtype,
            num_params=nparams,
            compatible=ok,
            notes=[] if ok else ["Ovi uses the 16 kHz VAE (v1-16.pth, 80 mels)"],
        )

    # --- BigVGAN ---
    for pre in ("generator.", ""):
        if any(k.startswith(pre + "conv_pre.") for k in keys) and any(k.startswith(pre + "ups.") for k in keys):
            w = shape(pre + "conv_pre.weight_v") or shape(pre + "conv_pre.parametrizations.weight.original1") or shape(
                pre + "conv_pre.weight"
            )
            mels = w[1] if w else None
            return Identification("bigvgan-16k" if mels == 80 else "bigvgan", f"BigVGAN vocoder ({mels} mels)",
                                  dtype=dtype, num_params=nparams, compatible=mels == 80)

    sample = ", ".join(sorted(keys)[:5])
    return Identification(
        "unknown", f"an unrecognised checkpoint ({len(keys)} tensors, e.g. {sample})", dtype=dtype, num_params=nparams,
        compatible=False,
    )
