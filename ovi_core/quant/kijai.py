"""kijai's Ovi files (ComfyUI-WanVideoWrapper): their key naming, mapped to the official names.

Read from the published loading code, ``kijai/ComfyUI-WanVideoWrapper`` ``nodes_model_loading.py``
(stored copy at commit 3317577; the same block in ``rookiestar28/ComfyUI-WanVideoWrapper`` @a53c24a, which
follows kijai's 088128b), ``WanVideoModelLoader.loadmodel``, the ``# Ovi`` block and the
``extra_model`` loop (around l.1169-1260 at 088128b), and ``custom_linear.py`` ``CustomLinear``:

* the **main file** is the video tower. Its keys are either official (``video_model.*``, which kijai strips,
  renaming ``modulation.modulation`` to ``modulation``) or already in Wan layout: unprefixed, with the
  block modulation as ``blocks.N.modulation`` (no second ``.modulation``);
* the **audio file** is passed as an "extra model" and recognised by ``audio_model.patch_embedding.0.weight``;
  its keys keep the ``audio_model.`` prefix, in the same Wan layout (``audio_model.blocks.N.modulation``);
* a **combined** file has unprefixed video keys and ``audio_model.*`` keys side by side (kijai's test:
  ``audio_model.`` keys and ``blocks.`` keys in one state dict);
* **fp8_e4m3fn_scaled**: block Linear weights in float8 with a per-tensor ``<module>.scale_weight``
  (``.weight_scale`` is renamed to it), marked by a ``scaled_fp8`` tensor; the weight used is
  ``weight.to(dtype) * scale_weight``. Norms, biases, modulation, embeddings stay high precision
  (``params_to_keep``).
* ComfyUI prefixes ``model.diffusion_model.`` / ``diffusion_model.`` are stripped, as kijai does.

Published names (OVI_REFERENCE.md): ``Kijai/WanVideo_comfy/Ovi/Wan_2_2_Ovi_video_model_bf16.safetensors`` +
``..._audio_model_bf16``, and ``Kijai/WanVideo_comfy_fp8_scaled/TI2V/Ovi/
Wan2_2-5B-Ovi_960x960_10s_fp8_e4m3fn_scaled_KJ.safetensors``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from ovi_core.quant import fp8 as f8
from ovi_core.quant.policy import quantizable

TOWER_PREFIXES = ("video_model.", "audio_model.")
_STRIP = ("model.diffusion_model.", "diffusion_model.")
_MOD = re.compile(r"^(?P<p>(?:video_model|audio_model)\.)?blocks\.(?P<i>\d+)\.modulation$")


@dataclass
class Layout:
    """How one file's keys map onto official names.

    ``names``: ``{official name: key in file}``; ``scales``: ``{official weight name: scale key in file}``;
    ``towers``: the towers the file holds; ``style``: ``"official"``, ``"kijai"`` (Wan-layout keys) or
    ``"mixed"``; ``scaled``: the file carries ``scale_weight`` tensors.
    """

    names: dict[str, str] = field(default_factory=dict)
    scales: dict[str, str] = field(default_factory=dict)
    towers: tuple[str, ...] = ()
    style: str = "official"
    scaled: bool = False
    ignored: list[str] = field(default_factory=list)

    def describe(self) -> str:
        what = {("video",): "video tower", ("audio",): "audio tower"}.get(self.towers, "video + audio towers")
        style = {"official": "official names", "kijai": "kijai/Wan layout", "mixed": "kijai/Wan layout"}[self.style]
        return f"{what}, {style}{', fp8_e4m3fn_scaled (scale_weight per Linear)' if self.scaled else ''}"


def _tower_of_unprefixed(keys: set[str], shapes: Mapping[str, tuple[int, ...]], has_audio_prefixed: bool
                         ) -> str | None:
    if not any(k.startswith("blocks.") for k in keys):
        return None
    if has_audio_prefixed:
        return "video_model."  # kijai combined: unprefixed video + audio_model.*
    pe = shapes.get("patch_embedding.weight")
    if pe is not None and len(pe) == 5:
        return "video_model."
    if "patch_embedding.0.weight" in keys:
        return "audio_model."
    return None


def layout_of(shapes: Mapping[str, tuple[int, ...]]) -> Layout | None:
    """Map a file's ``{key: shape}`` onto official names; None when it is not an Ovi tower/fusion file."""
    keys = {}
    for k in shapes:
        s = k
        for p in _STRIP:
            if s.startswith(p):
                s = s[len(p):]
                break
        keys[s] = k
    skeys = set(keys)
    sshapes = {s: tuple(shapes[k]) for s, k in keys.items()}
    has_audio = any(k.startswith("audio_model.") for k in skeys)
    bare = _tower_of_unprefixed({k for k in skeys if not k.startswith(TOWER_PREFIXES)}, sshapes, has_audio)
    lay = Layout()
    kijai_names = False
    for s, orig in keys.items():
        if s == f8.MARKER:
            lay.ignored.append(orig)
            continue
        name = s
        if not name.startswith(TOWER_PREFIXES):
            if bare is None:
                if name.startswith("blocks.") or "." in name:
                    return None
                lay.ignored.append(orig)
                continue
            name = bare + name
            kijai_names = True
        for suf in (f8.SCALE_SUFFIX, f8.ALT_SCALE_SUFFIX):
            if name.endswith(suf):
                lay.scales[name[: -len(suf)] + ".weight"] = orig
                lay.scaled = True
                break
        else:
            m = _MOD.match(name)
            if m:
                name = f"{m.group('p') or ''}blocks.{m.group('i')}.modulation.modulation"
                kijai_names = True
            lay.names[name] = orig
    if not any("k_fusion" in n for n in lay.names):
        return None
    lay.towers = tuple(t for t, p in (("video", "video_model."), ("audio", "audio_model."))
                       if any(n.startswith(p) for n in lay.names))
    lay.style = "kijai" if kijai_names else "official"
    return lay


# ----------------------------------------------------------------------------------------------
# Writing files in kijai's layout (tests, tiny weights)
# ----------------------------------------------------------------------------------------------


def _kijai_name(official: str, *, strip_video: bool) -> str:
    name = official
    if name.endswith(".modulation.modulation"):
        name = name[: -len(".modulation")]
    if strip_video and name.startswith("video_model."):
        name = name[len("video_model."):]
    return name


def kijai_state_dicts(sd: Mapping[str, torch.Tensor], *, fp8_scaled: bool = False,
                      dtype: torch.dtype = torch.bfloat16) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """An official fusion state dict -> ``(video file, audio file)`` state dicts in kijai's layout.

    ``fp8_scaled``: block Linear weights become float8 e4m3fn with a ``scale_weight`` each (other tensors
    ``dtype``), and the video file gets the ``scaled_fp8`` marker.
    """
    video: dict[str, torch.Tensor] = {}
    audio: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        out = video if k.startswith("video_model.") else audio
        name = _kijai_name(k, strip_video=True)
        if fp8_scaled and quantizable(k, tuple(v.shape)):
            q, s = f8.to_scaled_fp8(v)
            out[name] = q
            out[name[: -len(".weight")] + f8.SCALE_SUFFIX] = torch.tensor(s, dtype=torch.float32)
        else:
            out[name] = v.detach().to(dtype).contiguous()
    if fp8_scaled:
        video[f8.MARKER] = torch.zeros(0, dtype=torch.float8_e4m3fn)
    return video, audio


def write_kijai_files(sd: Mapping[str, torch.Tensor], folder: str | os.PathLike, *, fp8_scaled: bool = False,
                      combined: bool = False) -> list[str]:
    """Write kijai-layout files into ``folder`` with kijai-style names; returns their paths (video first).

    ``combined``: one file holding both towers (unprefixed video + ``audio_model.*``), as the published
    fp8_scaled file.
    """
    from safetensors.torch import save_file

    folder = os.fspath(folder)
    os.makedirs(folder, exist_ok=True)
    video, audio = kijai_state_dicts(sd, fp8_scaled=fp8_scaled)
    tag = "fp8_e4m3fn_scaled_KJ" if fp8_scaled else "bf16"
    if combined:
        path = os.path.join(folder, f"Wan2_2-5B-Ovi_960x960_{tag}.safetensors")
        save_file({**video, **audio}, path)
        return [path]
    vp = os.path.join(folder, f"Wan_2_2_Ovi_video_model_{tag}.safetensors")
    ap = os.path.join(folder, f"Wan_2_2_Ovi_audio_model_{tag}.safetensors")
    save_file(video, vp)
    save_file(audio, ap)
    return [vp, ap]


__all__ = ["Layout", "layout_of", "kijai_state_dicts", "write_kijai_files"]
