"""Loading, saving and tiny-weight writing for the Ovi fusion DiT.

Accepted files (``.safetensors``, or ``.pt``/``.pth`` read with ``weights_only=True``):

* one official fusion file (``model.safetensors``, ``model_960x960*.safetensors``, fp8 variants), keys
  ``video_model.*`` and ``audio_model.*``;
* two tower files (e.g. Kijai's split ``..._video_model_bf16`` / ``..._audio_model_bf16``), each either
  prefixed or unprefixed (then recognised by its patch embedding: Conv3d = video, Conv1d stack = audio),
  in official names or kijai's Wan layout (see :mod:`ovi_core.quant.kijai`);
* kijai's ``fp8_e4m3fn_scaled`` files and GGUF files (:mod:`ovi_core.quant`).

The model is built on the meta device and the file's tensors are adopted one by one (one copy in memory;
every tensor name checked strictly first). Float8 tensors stay float8 in memory; quantized and scaled fp8
weights stay packed; every Linear/Conv casts its weight to the compute dtype when called, so ``dtype`` is
then the compute dtype. Other tensors are cast to ``dtype``, tensor by tensor.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence

import torch

from ovi_core.io import checkpoints as ck
from ovi_core.io.checkpoint_id import TensorInfo, identify
from ovi_core.model.config import OVI_11B, TINY, FusionConfig, infer_config, infer_tower_config
from ovi_core.model.fusion import OviFusionModel
from ovi_core.model.tower import OviTower
from ovi_core.quant.fp8 import FP8_DTYPES
from ovi_core.quant.fp8_compute import enable_fp8_compute
from ovi_core.quant.sources import NotOviError, Source, fp8_eligible, is_gguf, iter_load, open_source
from ovi_core.quant.tensor import is_quantized
from ovi_core.runtime.attention import BACKENDS, available_backends

logger = logging.getLogger(__name__)

WHAT = "Ovi fusion model"
PREFIXES = ("video_model.", "audio_model.")
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


def _not_ovi(path: str, infos: Mapping[str, TensorInfo]) -> ck.CheckpointError:
    """An error naming the file, what it looks like and the first missing / unexpected keys."""
    ident = identify(infos, path=path)
    try:
        ck.check_shapes(full_size_shapes(), infos, path=path, what=WHAT, ident=ident)
    except ck.CheckpointError as e:
        return e
    return ck.CheckpointError(f"{path!r} is not a usable {WHAT} (it looks like: {ident.description}).")


def _open(path: str) -> Source:
    try:
        return open_source(path)
    except NotOviError:
        if is_gguf(path):
            raise
        raise _not_ovi(path, ck.peek(path)) from None


def _plan(paths: Sequence[str]) -> tuple[dict[str, tuple[Source, str]], list[Source]]:
    """``{official name: (source, name)}`` over one or two files (each checked to be an Ovi file)."""
    plan: dict[str, tuple[Source, str]] = {}
    sources = []
    for p in paths:
        src = _open(p)
        sources.append(src)
        for full in src.infos:
            if full in plan:
                raise ck.CheckpointError(
                    f"{p!r} and {plan[full][0].path!r} both hold {full!r}: pass one fusion file, or one video tower "
                    "file and one audio tower file."
                )
            plan[full] = (src, full)
    return plan, sources


def _as_paths(path: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    if isinstance(path, (str, os.PathLike)):
        return [os.fspath(path)]
    paths = [os.fspath(p) for p in path]
    if not 1 <= len(paths) <= 2:
        raise ValueError(f"pass one fusion file or two tower files, got {len(paths)} paths.")
    return paths


def describe_files(path: str | os.PathLike | Sequence[str | os.PathLike]) -> str:
    """The format of a fusion file or split pair, e.g. ``"GGUF Q4_K (video + audio towers, official names)"``."""
    return " + ".join(_open(p).describe() for p in _as_paths(path))


def _adopt(model: torch.nn.Module, name: str, tensor: torch.Tensor) -> None:
    """Put ``tensor`` in place of the (meta) parameter or buffer ``name`` of ``model``."""
    mod_name, _, attr = name.rpartition(".")
    mod = model.get_submodule(mod_name)
    if attr in mod._parameters:
        grad = mod._parameters[attr].requires_grad and tensor.is_floating_point() and not is_quantized(tensor)
        mod._parameters[attr] = torch.nn.Parameter(tensor, requires_grad=grad)  # as load_state_dict(assign=True)
    elif attr in mod._buffers:
        mod._buffers[attr] = tensor
    else:
        raise ck.CheckpointError(f"the model has no tensor {name!r}.")


def _packed_file(sources: Sequence[Source]) -> bool:
    """Whether any of the files holds float8 or quantized weights already (fp8, fp8_scaled, GGUF)."""
    return any(src.kind == "gguf" or src.qtypes or any(i.dtype in FP8_DTYPES for i in src.infos.values())
               for src in sources)


def load_fusion(
    path: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.bfloat16,
    attention_backend: str = "auto",
    config: FusionConfig | None = None,
    fp8_compute: bool = False,
    float8: torch.dtype | None = None,
    operations: object | None = None,
) -> OviFusionModel:
    """Load an Ovi fusion model (one fusion file or two tower files) strictly, in eval mode.

    Formats (see :mod:`ovi_core.quant`): official safetensors/``.pt`` (bf16, fp8), kijai's split or combined
    files and ``fp8_e4m3fn_scaled``, and GGUF (``Q8_0``/``Q6_K``/``Q4_K``). Quantized and scaled-fp8 weights
    stay packed in memory (:class:`~ovi_core.quant.tensor.QuantizedWeight`) and are expanded per layer when
    used, on the device the layer runs on.

    Args:
        path: a fusion file, or a sequence of one or two files (video tower + audio tower).
        device: where the weights go (read there directly for safetensors).
        dtype: compute dtype (float32, bfloat16 or float16). Non-float8 tensors are stored in it (cast tensor
            by tensor); float8 and quantized tensors stay packed and are upcast per layer at call time.
            bfloat16 matches the official code.
        attention_backend: stored on the model; ``"auto"`` (the process default, see
            :func:`ovi_core.runtime.attention.set_default_backend`), ``"sdpa"``, ``"flash_attn_3"``, ``"flash_attn_2"``,
            ``"xformers"`` or ``"sage"`` (falls back to SDPA when unusable).
        config: the model config; by default inferred from the shapes (:func:`infer_config`), which cannot
            see ``num_heads``/``text_len`` (head_dim 128 and text_len 512 for full-size widths).
        fp8_compute: multiply float8 e4m3fn weights in fp8 (``torch._scaled_mm``) where the GPU supports it
            (CUDA sm_89+); elsewhere, and by default, weights are upcast per layer
            (:mod:`ovi_core.quant.fp8_compute`).
        float8: ``torch.float8_e4m3fn`` (or ``e5m2``) to keep a bf16/fp32 file's weights in float8, in the
            official fp8 layout (norms and biases stay in ``dtype``): each tensor is converted on the CPU as it is
            read and only then moved to ``device``, so a GPU never holds the unconverted model (the load peak
            there is the fp8 model: 10.9 GiB at full size, not 21.7 + 10.9). The same weights as
            ``fp8_state_dict`` of the model loaded without it. Ignored (with a log line) for files that are
            packed already (fp8, fp8_scaled, GGUF). ``device="meta"`` traces a load without memory.
        operations: the layer classes the model is built on (:mod:`ovi_core.runtime.ops`; ComfyUI passes
            ``comfy.ops.manual_cast`` so its ``ModelPatcher`` can stream layers); None: plain ``torch.nn``.

    Raises:
        FileNotFoundError: a path does not exist.
        CheckpointError: a file is not an Ovi fusion model/tower or does not fit ``config``, or one file of a
            split pair is missing; the message names the file, its format, and the first missing /
            unexpected keys.
    """
    if dtype not in COMPUTE_DTYPES:
        raise ValueError(f"dtype must be one of {COMPUTE_DTYPES} (the compute dtype), got {dtype}.")
    if float8 is not None and float8 not in FP8_DTYPES:
        raise ValueError(f"float8 must be None or one of {FP8_DTYPES}, got {float8}.")
    if attention_backend != "auto" and attention_backend not in BACKENDS:
        raise ValueError(f"attention_backend must be 'auto' or one of {BACKENDS}, got {attention_backend!r}.")
    if attention_backend not in ("auto", *available_backends()):
        logger.warning("attention backend %r is not installed; using SDPA", attention_backend)
    paths = _as_paths(path)
    label = " + ".join(paths)
    plan, sources = _plan(paths)
    infos = {full: src.infos[full] for full, (src, _) in plan.items()}
    ident = identify(infos, path=paths[0] if len(paths) == 1 else None)
    shapes = {k: v.shape for k, v in infos.items()}
    fmt = " + ".join(s.describe() for s in sources)
    if config is None:
        missing = [pre for pre in PREFIXES if not any(k.startswith(pre) for k in shapes)]
        if missing:
            have = "audio" if missing[0] == "video_model." else "video"
            raise ck.CheckpointError(
                f"{label!r} holds only the {have} tower (format: {fmt}); also pass the {missing[0][:5]} tower "
                f"file{' (kijai publishes the pair as ..._video_model_... and ..._audio_model_...)' if sources[0].layout.style == 'kijai' else ''}."
            )
        try:
            config = infer_config(shapes)
        except ValueError:
            ck.check_shapes(full_size_shapes(), shapes, path=label, what=WHAT, ident=ident)
            raise
    model = OviFusionModel(config, device="meta", operations=operations)
    ck.check_shapes(model.state_dict(), shapes, path=label, what=WHAT, ident=ident)

    if float8 is not None and _packed_file(sources):
        logger.info("%s is packed already (%s); kept as it is, not converted to %s", label, fmt, float8)
        float8 = None
    packed = False
    adopted: set[str] = set()
    for src in sources:
        names = [full for full, (s, _) in plan.items() if s is src]
        for full, tensor in iter_load(src, names, device=device, dtype=dtype, float8=float8):
            if tensor.dtype in FP8_DTYPES or is_quantized(tensor):
                packed = True
            _adopt(model, full, tensor)
            adopted.add(full)
    left = [n for n in model.state_dict() if n not in adopted]
    if left:
        raise ck.CheckpointError(f"{label!r}: {len(left)} tensors were not loaded (e.g. {left[:3]}).")
    if packed:
        model.compute_dtype = dtype
        logger.info("%s: packed weights (%s) kept packed, computing in %s", label, fmt, dtype)
    if fp8_compute:
        n = enable_fp8_compute(model)
        if not n:
            logger.warning("fp8 compute asked for, but %s has no float8 e4m3fn weights (it is %s)", label, fmt)
    model.attention_backend = attention_backend
    model.eval()
    logger.info("loaded %s (%s; %s) on %s", label, ident.description, fmt, device)
    return model


# ----------------------------------------------------------------------------------------------
# Saving and tiny weights
# ----------------------------------------------------------------------------------------------


def fp8_state_dict(
    sd: Mapping[str, torch.Tensor], *, dtype: torch.dtype = torch.float8_e4m3fn
) -> dict[str, torch.Tensor]:
    """The official fp8 layout: tensors whose name contains neither ``norm`` nor ``bias`` in ``dtype``."""
    return {k: v.to(dtype) if fp8_eligible(k) else v for k, v in sd.items()}


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
    "describe_files",
    "full_size_shapes",
    "shapes_for",
    "load_fusion",
    "save_fusion",
    "fp8_state_dict",
    "random_fusion",
    "write_tiny_fusion",
]
