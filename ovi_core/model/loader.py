"""Loading, saving and tiny-weight writing for the Ovi fusion DiT.

Accepted files (``.safetensors``, or ``.pt``/``.pth`` read with ``weights_only=True``):

* one official fusion file (``model.safetensors``, ``model_960x960*.safetensors``, fp8 variants), keys
  ``video_model.*`` and ``audio_model.*``;
* two tower files (e.g. Kijai's split ``..._video_model_bf16`` / ``..._audio_model_bf16``), each either
  prefixed or unprefixed (then recognised by its patch embedding: Conv3d = video, Conv1d stack = audio).

The model is built on the meta device and the file's tensors are adopted with ``strict=True, assign=True``
(one copy in memory). Float8 tensors stay float8 in memory; every Linear/Conv casts its weight to the
compute dtype when called, so ``dtype`` is then the compute dtype. Other tensors are cast to ``dtype``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence

import torch

from ovi_core import checkpoints as ck
from ovi_core.attention import BACKENDS, available_backends
from ovi_core.model.config import (
    OVI_11B,
    TINY,
    FusionConfig,
    infer_config,
    infer_tower_config,
)
from ovi_core.model.fusion import OviFusionModel
from ovi_core.model.tower import OviTower

logger = logging.getLogger(__name__)

WHAT = "Ovi fusion model"
PREFIXES = ("video_model.", "audio_model.")
FP8_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)
COMPUTE_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _sorted(shapes: Mapping[str, list[int]]) -> dict[str, list[int]]:
    return {k: shapes[k] for k in sorted(shapes)}


def full_size_shapes() -> dict[str, list[int]]:
    """``{name: shape}`` of the official 11B fusion model (built on the meta device), sorted by name."""
    return _sorted(ck.meta_shapes(OviFusionModel(OVI_11B, device="meta")))


def shapes_for(shapes: Mapping[str, tuple[int, ...]]) -> dict[str, list[int]]:
    """Expected ``{name: shape}`` for the model a file's shapes describe (config inferred from the shapes).

    A fusion file (both prefixes) gives the fusion model's shapes; a single tower file (prefixed or not)
    gives that tower's shapes under the same naming. Raises ``ValueError`` when no Ovi config fits.
    """
    keys = set(shapes)
    prefixes = [p for p in PREFIXES if any(k.startswith(p) for k in keys)]
    if len(prefixes) == 2:
        return _sorted(ck.meta_shapes(OviFusionModel(infer_config(shapes), device="meta")))
    prefix = prefixes[0] if prefixes else ""
    sub = {k[len(prefix):]: tuple(v) for k, v in shapes.items() if k.startswith(prefix)}
    audio = None if prefix == "" else prefix == "audio_model."
    tower = OviTower(infer_tower_config(sub, audio=audio), device="meta")
    return _sorted({prefix + k: v for k, v in ck.meta_shapes(tower).items()})


# ----------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------


def _tower_prefix(infos: Mapping[str, ck.TensorInfo]) -> str | None:
    """Prefix to give an unprefixed tower file, or None when it is not an Ovi tower."""
    if "blocks.0.cross_attn.k_fusion.weight" not in infos:
        return None
    pe = infos.get("patch_embedding.weight")
    if pe is not None and len(pe.shape) == 5:
        return "video_model."
    if "patch_embedding.0.weight" in infos:
        return "audio_model."
    return None


def _not_ovi(path: str, infos: Mapping[str, ck.TensorInfo]) -> ck.CheckpointError:
    """An error naming the file, what it looks like and the first missing / unexpected keys."""
    ident = ck.identify(infos, path=path)
    try:
        ck.check_shapes(full_size_shapes(), infos, path=path, what=WHAT, ident=ident)
    except ck.CheckpointError as e:
        return e
    return ck.CheckpointError(f"{path!r} is not a usable {WHAT} (it looks like: {ident.description}).")


def _plan(paths: Sequence[str]) -> tuple[dict[str, tuple[str, str]], dict[str, dict[str, ck.TensorInfo]]]:
    """``{model key: (file, key in file)}`` over one or two files (each checked to be an Ovi file), and
    each file's ``{key: TensorInfo}``."""
    plan: dict[str, tuple[str, str]] = {}
    peeks: dict[str, dict[str, ck.TensorInfo]] = {}
    for p in paths:
        infos = peeks[p] = ck.peek(p)
        if any(k.startswith(PREFIXES) for k in infos):
            names = {k: k for k in infos}
        else:
            prefix = _tower_prefix(infos)
            if prefix is None:
                raise _not_ovi(p, infos)
            names = {prefix + k: k for k in infos}
        for full, key in names.items():
            if full in plan:
                raise ck.CheckpointError(
                    f"{p!r} and {plan[full][0]!r} both hold {full!r}: pass one fusion file, or one video tower "
                    "file and one audio tower file."
                )
            plan[full] = (p, key)
    return plan, peeks


def _as_paths(path: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    if isinstance(path, (str, os.PathLike)):
        return [os.fspath(path)]
    paths = [os.fspath(p) for p in path]
    if not 1 <= len(paths) <= 2:
        raise ValueError(f"pass one fusion file or two tower files, got {len(paths)} paths.")
    return paths


def load_fusion(
    path: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.bfloat16,
    attention_backend: str = "auto",
    config: FusionConfig | None = None,
) -> OviFusionModel:
    """Load an Ovi fusion model (one fusion file or two tower files) strictly, in eval mode.

    Args:
        path: a fusion file, or a sequence of one or two files (video tower + audio tower).
        device: where the weights go (read there directly for safetensors).
        dtype: compute dtype (float32, bfloat16 or float16). Non-float8 tensors are stored in it; float8
            tensors stay float8 and are upcast per layer at call time. bfloat16 matches the official code.
        attention_backend: stored on the model; ``"auto"`` (the process default, see
            :func:`ovi_core.attention.set_default_backend`), ``"sdpa"``, ``"flash_attn_3"``, ``"flash_attn_2"``,
            ``"xformers"`` or ``"sage"`` (falls back to SDPA when unusable).
        config: the model config; by default inferred from the shapes (:func:`infer_config`), which cannot
            see ``num_heads``/``text_len`` (head_dim 128 and text_len 512 for full-size widths).

    Raises:
        FileNotFoundError: a path does not exist.
        CheckpointError: a file is not an Ovi fusion model/tower or does not fit ``config``; the message
            names the file, what it looks like, and the first missing / unexpected keys.
    """
    if dtype not in COMPUTE_DTYPES:
        raise ValueError(f"dtype must be one of {COMPUTE_DTYPES} (the compute dtype), got {dtype}.")
    if attention_backend != "auto" and attention_backend not in BACKENDS:
        raise ValueError(f"attention_backend must be 'auto' or one of {BACKENDS}, got {attention_backend!r}.")
    if attention_backend not in ("auto", *available_backends()):
        logger.warning("attention backend %r is not installed; using SDPA", attention_backend)
    paths = _as_paths(path)
    label = " + ".join(paths)
    plan, peeks = _plan(paths)
    infos = {full: peeks[p][key] for full, (p, key) in plan.items()}
    ident = ck.identify(infos, path=paths[0] if len(paths) == 1 else None)
    shapes = {k: v.shape for k, v in infos.items()}
    if config is None:
        missing = [pre for pre in PREFIXES if not any(k.startswith(pre) for k in shapes)]
        if missing:
            raise ck.CheckpointError(
                f"{label!r} holds only the {'audio' if missing[0] == 'video_model.' else 'video'} tower "
                f"(it looks like: {ident.description}); also pass the {missing[0][:5]} tower file."
            )
        try:
            config = infer_config(shapes)
        except ValueError:
            ck.check_shapes(full_size_shapes(), shapes, path=label, what=WHAT, ident=ident)
            raise
    model = OviFusionModel(config, device="meta")
    ck.check_shapes(model.state_dict(), shapes, path=label, what=WHAT, ident=ident)

    sd: dict[str, torch.Tensor] = {}
    has_fp8 = False
    for p in paths:
        raw = ck.load_state_dict(p, device=device)
        for full, (src, key) in plan.items():
            if src != p:
                continue
            tensor = raw.pop(key)
            if tensor.dtype in FP8_DTYPES:
                has_fp8 = True
            elif tensor.is_floating_point() and tensor.dtype != dtype:
                tensor = tensor.to(dtype)
            sd[full] = tensor
        del raw
    ck.load_strict(model, sd, path=label, what=WHAT)
    if has_fp8:
        model.compute_dtype = dtype
        logger.info("%s: float8 weights kept in float8, computing in %s", label, dtype)
    model.attention_backend = attention_backend
    model.eval()
    logger.info("loaded %s (%s) on %s", label, ident.description, device)
    return model


# ----------------------------------------------------------------------------------------------
# Saving and tiny weights
# ----------------------------------------------------------------------------------------------


def fp8_state_dict(
    sd: Mapping[str, torch.Tensor], *, dtype: torch.dtype = torch.float8_e4m3fn
) -> dict[str, torch.Tensor]:
    """The official fp8 layout: tensors whose name contains neither ``norm`` nor ``bias`` in ``dtype``."""
    return {k: v if ("norm" in k or "bias" in k) else v.to(dtype) for k, v in sd.items()}


def save_fusion(
    model: OviFusionModel, path: str | os.PathLike, *, dtype: torch.dtype | None = None
) -> None:
    """Write ``model.state_dict()`` as one official-layout safetensors file.

    ``dtype``: None keeps the stored dtypes; a float dtype casts every tensor; a float8 dtype writes the
    official fp8 layout (norms and biases stay as they are).
    """
    from safetensors.torch import save_file

    sd = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    if dtype in FP8_DTYPES:
        sd = fp8_state_dict(sd, dtype=dtype)
    elif dtype is not None:
        sd = {k: v.to(dtype) for k, v in sd.items()}
    save_file({k: v.to("cpu") for k, v in sd.items()}, os.fspath(path), metadata={"format": "pt"})


def random_fusion(config: FusionConfig = TINY, *, seed: int = 0, std: float = 0.05) -> OviFusionModel:
    """A float32 CPU model with seeded random weights: ``N(0, std)``, norm weights ``1 + N(0, std)``."""
    model = OviFusionModel(config, device="cpu", dtype=torch.float32)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            noise = torch.randn(p.shape, generator=gen) * std
            is_norm_w = ".norm" in name and name.endswith("weight") or "norm_fusion" in name and name.endswith("weight")
            p.copy_(1.0 + noise if is_norm_w else noise)
    return model.eval()


def write_tiny_fusion(path: str | os.PathLike, *, seed: int = 0, config: FusionConfig = TINY) -> str:
    """Write a tiny random fusion model in the official file format (bf16 safetensors, keys
    ``video_model.*`` / ``audio_model.*``), deterministic for a seed. Returns the path."""
    path = os.fspath(path)
    save_fusion(random_fusion(config, seed=seed), path, dtype=torch.bfloat16)
    return path


__all__ = [
    "full_size_shapes",
    "shapes_for",
    "load_fusion",
    "save_fusion",
    "fp8_state_dict",
    "random_fusion",
    "write_tiny_fusion",
]
