"""UMT5-XXL text encoder: loading the official Wan-format file or ComfyUI's repackaged files.

The network itself is transformers' ``UMT5EncoderModel`` (gated-GELU FFN, a relative position bias table
in every layer, 32 buckets, maximum distance 128, RMS norm eps 1e-6, no attention scaling). Ovi uses Wan's
own T5 code, whose state dict uses other names; the two compute the same function once renamed, so this
module keeps one documented renaming table (the only exception to the house rule of official names):

==========================================  ===========================================================
Wan (``models_t5_umt5-xxl-enc-bf16.pth``)  Hugging Face / ComfyUI (``umt5_xxl_*.safetensors``)
==========================================  ===========================================================
``token_embedding.weight``                  ``shared.weight`` (= ``encoder.embed_tokens.weight``)
``blocks.N.attn.{q,k,v,o}.weight``          ``encoder.block.N.layer.0.SelfAttention.{q,k,v,o}.weight``
``blocks.N.pos_embedding.embedding.weight`` ``encoder.block.N.layer.0.SelfAttention.relative_attention_bias.weight``
``blocks.N.norm1.weight``                   ``encoder.block.N.layer.0.layer_norm.weight``
``blocks.N.ffn.gate.0.weight``              ``encoder.block.N.layer.1.DenseReluDense.wi_0.weight`` (GELU branch)
``blocks.N.ffn.fc1.weight``                 ``encoder.block.N.layer.1.DenseReluDense.wi_1.weight``
``blocks.N.ffn.fc2.weight``                 ``encoder.block.N.layer.1.DenseReluDense.wo.weight``
``blocks.N.norm2.weight``                   ``encoder.block.N.layer.1.layer_norm.weight``
``norm.weight``                             ``encoder.final_layer_norm.weight``
==========================================  ===========================================================

ComfyUI's files may also hold ``spiece_model`` (the tokenizer's sentencepiece bytes, used as the tokenizer
when no folder is given), ``scaled_fp8`` (a marker) and per-weight ``*.scale_weight`` scalars (the weight
is ``fp8 * scale``; ``*.scale_input`` is ignored). Plain fp8 weights are upcast.

The number of heads is read from the position-bias table (``[num_buckets, num_heads]``), so every
config can be inferred from shapes alone.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ovi_core.io import checkpoints as ck
from ovi_core.io.checkpoint_id import identify
from ovi_core.text.tokenizer import TEXT_LEN, UMT5Tokenizer, load_tokenizer, write_tiny_tokenizer
from ovi_core.text.umt5_layers import rebuild_on

if TYPE_CHECKING:  # pragma: no cover
    from transformers import UMT5EncoderModel

logger = logging.getLogger(__name__)

WHAT = "UMT5-XXL text encoder"
OFFICIAL_FILENAME = "models_t5_umt5-xxl-enc-bf16.pth"
TOKENIZER_SUBDIR = os.path.join("google", "umt5-xxl")


@dataclass(frozen=True)
class UMT5Config:
    """Wan's ``umt5_xxl`` encoder arguments (same field names as the official code)."""

    vocab_size: int = 256384
    dim: int = 4096
    dim_attn: int = 4096
    dim_ffn: int = 10240
    num_heads: int = 64
    encoder_layers: int = 24
    num_buckets: int = 32
    shared_pos: bool = False
    max_dist: int = 128
    eps: float = 1e-6

    def __post_init__(self) -> None:
        if self.shared_pos:
            raise ValueError("Ovi's text encoder is UMT5 with a position bias per layer (shared_pos=False).")
        if self.dim_attn % self.num_heads:
            raise ValueError(f"dim_attn {self.dim_attn} is not divisible by num_heads {self.num_heads}.")


UMT5_XXL = UMT5Config()
# Tiny preset used by the tiny-weights set; vocab_size is replaced by the tiny tokenizer's size.
UMT5_TINY = UMT5Config(vocab_size=1000, dim=32, dim_attn=32, dim_ffn=64, num_heads=4, encoder_layers=2)


def _hf_config(cfg: UMT5Config) -> Any:
    from transformers import UMT5Config as HFUMT5Config  # noqa: PLC0415  (heavy import)

    hf = HFUMT5Config(
        vocab_size=cfg.vocab_size,
        d_model=cfg.dim,
        d_kv=cfg.dim_attn // cfg.num_heads,
        d_ff=cfg.dim_ffn,
        num_layers=cfg.encoder_layers,
        num_heads=cfg.num_heads,
        relative_attention_num_buckets=cfg.num_buckets,
        relative_attention_max_distance=cfg.max_dist,
        dropout_rate=0.0,
        layer_norm_epsilon=cfg.eps,
        feed_forward_proj="gated-gelu",  # GELU (tanh approximation) on the gate branch, as Wan's T5
        use_cache=False,
        pad_token_id=0,
        eos_token_id=1,
    )
    hf._attn_implementation = "eager"
    return hf


def build_umt5(cfg: UMT5Config, *, device: str | torch.device = "meta",
               dtype: torch.dtype = torch.float32, operations: object | None = None) -> UMT5EncoderModel:
    """A transformers ``UMT5EncoderModel`` for ``cfg`` (on the meta device by default: no memory), its layers on
    ``operations`` when given (:mod:`ovi_core.text.umt5_layers`; None: transformers' own layers)."""
    from transformers import UMT5EncoderModel  # noqa: PLC0415

    with torch.device(device):
        model = UMT5EncoderModel(_hf_config(cfg))
    if operations is not None:
        rebuild_on(model, operations)
    return model.to(dtype=dtype).eval().requires_grad_(False)


# ----------------------------------------------------------------------------------------------
# Names
# ----------------------------------------------------------------------------------------------

_BLOCK_WAN_TO_HF = {
    "attn.q.weight": "layer.0.SelfAttention.q.weight",
    "attn.k.weight": "layer.0.SelfAttention.k.weight",
    "attn.v.weight": "layer.0.SelfAttention.v.weight",
    "attn.o.weight": "layer.0.SelfAttention.o.weight",
    "pos_embedding.embedding.weight": "layer.0.SelfAttention.relative_attention_bias.weight",
    "norm1.weight": "layer.0.layer_norm.weight",
    "ffn.gate.0.weight": "layer.1.DenseReluDense.wi_0.weight",
    "ffn.fc1.weight": "layer.1.DenseReluDense.wi_1.weight",
    "ffn.fc2.weight": "layer.1.DenseReluDense.wo.weight",
    "norm2.weight": "layer.1.layer_norm.weight",
}
_BLOCK_HF_TO_WAN = {v: k for k, v in _BLOCK_WAN_TO_HF.items()}
_TOP_WAN_TO_HF = {"token_embedding.weight": "shared.weight", "norm.weight": "encoder.final_layer_norm.weight"}
_TOP_HF_TO_WAN = {
    "shared.weight": "token_embedding.weight",
    "encoder.embed_tokens.weight": "token_embedding.weight",
    "encoder.final_layer_norm.weight": "norm.weight",
}
_WAN_BLOCK = re.compile(r"^blocks\.(\d+)\.(.+)$")
_HF_BLOCK = re.compile(r"^encoder\.block\.(\d+)\.(.+)$")
# tensors ComfyUI stores beside the weights (not parameters of the network)
_AUX_SUFFIXES = (".scale_weight", ".scale_input", ".weight_scale", ".input_scale", ".comfy_quant")
_AUX_KEYS = ("spiece_model", "scaled_fp8")


def wan_to_hf_name(name: str) -> str:
    """Wan T5 state-dict name -> transformers UMT5EncoderModel name (``KeyError`` if unknown)."""
    if name in _TOP_WAN_TO_HF:
        return _TOP_WAN_TO_HF[name]
    m = _WAN_BLOCK.match(name)
    if m and m.group(2) in _BLOCK_WAN_TO_HF:
        return f"encoder.block.{m.group(1)}.{_BLOCK_WAN_TO_HF[m.group(2)]}"
    raise KeyError(name)


def _hf_canonical(name: str) -> str:
    """Accept HF names with or without the ``encoder.`` prefix (``block.0...``, ``embed_tokens.weight``)."""
    if name.startswith(("block.", "final_layer_norm.", "embed_tokens.")):
        return "encoder." + name
    return name


def hf_to_wan_name(name: str) -> str:
    """transformers / ComfyUI UMT5 name -> Wan T5 name (``KeyError`` if unknown)."""
    name = _hf_canonical(name)
    if name in _TOP_HF_TO_WAN:
        return _TOP_HF_TO_WAN[name]
    m = _HF_BLOCK.match(name)
    if m and m.group(2) in _BLOCK_HF_TO_WAN:
        return f"blocks.{m.group(1)}.{_BLOCK_HF_TO_WAN[m.group(2)]}"
    raise KeyError(name)


def _is_aux(name: str) -> bool:
    return name in _AUX_KEYS or name.endswith(_AUX_SUFFIXES)


def layout_of(keys: Sequence[str] | Mapping[str, Any]) -> str:
    """``'wan'`` (official Wan file), ``'hf'`` (transformers / ComfyUI naming) or ``'unknown'``."""
    keys = set(keys)
    if "token_embedding.weight" in keys or any(k.startswith("blocks.0.attn.") for k in keys):
        return "wan"
    if any(_hf_canonical(k).startswith("encoder.block.0.layer.0.SelfAttention.") for k in keys) or "shared.weight" in keys:
        return "hf"
    return "unknown"


def _shape(v: Any) -> tuple[int, ...]:
    """A shape from a tensor, a ``TensorInfo`` or a sequence."""
    return tuple(v.shape) if hasattr(v, "shape") else tuple(v)


def _to_wan_shapes(shapes: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    out: dict[str, tuple[int, ...]] = {}
    for k, v in shapes.items():
        if _is_aux(k):
            continue
        v = _shape(v)
        try:
            out[k if k.startswith("blocks.") or k in _TOP_WAN_TO_HF else hf_to_wan_name(k)] = tuple(v)
        except KeyError:
            continue
    return out


# ----------------------------------------------------------------------------------------------
# Shapes
# ----------------------------------------------------------------------------------------------


def wan_shapes(cfg: UMT5Config) -> dict[str, list[int]]:
    """State-dict names (Wan layout) and shapes of the encoder for ``cfg``, built on the meta device."""
    model = build_umt5(cfg, device="meta")
    out: dict[str, list[int]] = {}
    for name, shape in ck.meta_shapes(model).items():
        out[hf_to_wan_name(name)] = shape  # shared.weight and encoder.embed_tokens.weight -> one entry
    return dict(sorted(out.items()))


def full_size_shapes() -> dict[str, list[int]]:
    """The official ``models_t5_umt5-xxl-enc-bf16.pth`` names and shapes (242 tensors)."""
    return wan_shapes(UMT5_XXL)


def umt5_config_from_shapes(shapes: Mapping[str, Any]) -> UMT5Config:
    """Infer the encoder config from a state dict's shapes (Wan or HF naming). ``ValueError`` if impossible."""
    s = _to_wan_shapes(shapes)

    def need(name: str) -> tuple[int, ...]:
        if name not in s:
            raise ValueError(
                f"Not a UMT5 encoder state dict: no {name!r} (or its Hugging Face name {wan_to_hf_name(name)!r})."
            )
        return s[name]

    vocab, dim = need("token_embedding.weight")
    layers = ck.count_indexed(s, "blocks.")
    if layers == 0:
        raise ValueError("Not a UMT5 encoder state dict: no encoder blocks.")
    dim_attn = need("blocks.0.attn.q.weight")[0]
    dim_ffn = need("blocks.0.ffn.fc1.weight")[0]
    num_buckets, num_heads = need("blocks.0.pos_embedding.embedding.weight")
    if dim_attn % num_heads:
        raise ValueError(f"Position bias has {num_heads} heads, which does not divide the attention width {dim_attn}.")
    return UMT5Config(vocab_size=vocab, dim=dim, dim_attn=dim_attn, dim_ffn=dim_ffn, num_heads=num_heads,
                      encoder_layers=layers, num_buckets=num_buckets)


def shapes_for(shapes: Mapping[str, Any]) -> dict[str, list[int]]:
    """The names and shapes a strict load expects for a file with these ``shapes``, in the file's naming.

    Wan files: the Wan names. HF / ComfyUI files: the HF names (with or without the ``encoder.`` prefix,
    ``shared.weight`` and/or ``encoder.embed_tokens.weight``). Either may also carry the auxiliary tensors
    ComfyUI stores (``spiece_model``, ``scaled_fp8``, ``<weight>.scale_weight`` ...) when their weight exists.
    """
    layout = layout_of(shapes)
    if layout == "unknown":
        raise ValueError(
            "Not a UMT5 encoder: no 'token_embedding.weight' / 'blocks.N.*' (Wan) nor 'shared.weight' / "
            "'encoder.block.N.*' (Hugging Face / ComfyUI) tensors."
        )
    cfg = umt5_config_from_shapes(shapes)
    wan = wan_shapes(cfg)
    keys = set(shapes)
    prefixed = not any(k.startswith(("block.", "final_layer_norm.")) for k in keys)
    out: dict[str, list[int]] = {}
    if layout == "wan":
        out.update(wan)
    else:
        for name, shape in wan.items():
            if name == "token_embedding.weight":
                emb = [n for n in ("shared.weight", "encoder.embed_tokens.weight", "embed_tokens.weight") if n in keys]
                for n in emb or ["shared.weight"]:
                    out[n] = shape
                continue
            hf = wan_to_hf_name(name)
            out[hf if prefixed else hf[len("encoder.") :]] = shape
    for k, v in shapes.items():
        if k in _AUX_KEYS:
            out[k] = list(_shape(v))
        elif k.endswith(_AUX_SUFFIXES):
            base = k.rsplit(".", 1)[0] + ".weight"
            if base in out:
                out[k] = list(_shape(v))
    return dict(sorted(out.items()))


# ----------------------------------------------------------------------------------------------
# Conversion and loading
# ----------------------------------------------------------------------------------------------

_FP8 = tuple(getattr(torch, n) for n in ("float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz")
             if hasattr(torch, n))


def _dequantize(w: torch.Tensor, scale: torch.Tensor | None) -> torch.Tensor:
    """fp8 (optionally scaled: ``w * scale``) -> float32; other dtypes unchanged."""
    if scale is None:
        return w.to(torch.float32) if w.dtype in _FP8 else w
    scale = scale.to(device=w.device, dtype=torch.float32)
    if scale.numel() == 1:
        scale = scale.reshape(())
    elif scale.numel() == w.shape[0]:
        scale = scale.reshape(-1, *([1] * (w.dim() - 1)))  # per-output-channel scale
    else:
        raise ValueError(f"weight scale of shape {tuple(scale.shape)} does not fit a weight of {tuple(w.shape)}.")
    return w.to(torch.float32) * scale


def convert_to_hf(
    sd: dict[str, torch.Tensor], *, dtype: torch.dtype, device: str | torch.device = "cpu"
) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
    """Turn a Wan-format or HF/ComfyUI state dict into transformers UMT5EncoderModel names.

    Dequantizes scaled fp8 (``weight * scale_weight``), upcasts plain fp8, casts to ``dtype`` on ``device``
    tensor by tensor, emptying ``sd`` as it goes (so the file's tensors are not all held twice).
    Returns ``(hf_state_dict, spiece_model_or_None)``; ``shared.weight`` and
    ``encoder.embed_tokens.weight`` are the same tensor.
    """
    spiece = sd.pop("spiece_model", None)
    sd.pop("scaled_fp8", None)
    scales: dict[str, torch.Tensor] = {}
    for k in [k for k in sd if k.endswith(_AUX_SUFFIXES)]:
        t = sd.pop(k)
        if k.endswith((".scale_weight", ".weight_scale")):
            scales[k.rsplit(".", 1)[0] + ".weight"] = t
    out: dict[str, torch.Tensor] = {}
    for k in list(sd):
        t = sd.pop(k)
        scale = scales.pop(k, None)
        t = _dequantize(t.to(device), scale).to(dtype)
        hf = wan_to_hf_name(k) if k.startswith("blocks.") or k in _TOP_WAN_TO_HF else _hf_canonical(k)
        if hf == "encoder.embed_tokens.weight":
            hf = "shared.weight"
        if hf == "shared.weight" and hf in out:
            continue  # both embedding names present: the same weights
        out[hf] = t
    if scales:
        raise ck.CheckpointError(f"Scale tensors without a weight: {', '.join(sorted(scales)[:5])}.")
    if "shared.weight" in out:
        out["encoder.embed_tokens.weight"] = out["shared.weight"]
    return out, spiece


def load_umt5_model(
    path: str | os.PathLike, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.bfloat16,
    operations: object | None = None,
) -> tuple[UMT5EncoderModel, UMT5Config, torch.Tensor | None]:
    """Load a UMT5 encoder file strictly. Returns ``(model, config, spiece_model bytes tensor or None)``.

    Accepts the official Wan-format ``.pth`` and ComfyUI/transformers-named safetensors (fp16, bf16, fp8,
    scaled fp8). Any other file raises :class:`ovi_core.io.checkpoints.CheckpointError` saying what it is.
    """
    path = os.fspath(path)
    infos = ck.peek(path)
    ident = identify(infos, path=path)
    if ident.component != "umt5-xxl":
        notes = f" ({'; '.join(ident.notes)})" if ident.notes else ""
        raise ck.CheckpointError(
            f"{path!r} is not a UMT5-XXL text encoder: it looks like {ident.description}{notes}. Expected the "
            f"official '{OFFICIAL_FILENAME}' (Wan-AI/Wan2.2-TI2V-5B) or ComfyUI's 'umt5_xxl_fp16.safetensors' / "
            "'umt5_xxl_fp8_e4m3fn_scaled.safetensors' (put it in models/text_encoders)."
        )
    shapes = {k: v.shape for k, v in infos.items()}
    try:
        expected = shapes_for(shapes)
    except ValueError as e:
        raise ck.CheckpointError(f"{path!r} does not fit the {WHAT}: {e}") from e
    ck.check_shapes(expected, shapes, path=path, what=WHAT, ident=ident)
    cfg = umt5_config_from_shapes(shapes)

    sd = ck.load_state_dict(path)
    hf_sd, spiece = convert_to_hf(sd, dtype=dtype, device=device)
    model = build_umt5(cfg, device="meta", dtype=dtype, operations=operations)
    ck.load_strict(model, hf_sd, path=path, what=WHAT)
    model.eval().requires_grad_(False)
    logger.info("Loaded %s from %s (%s layout, %d layers, dim %d, %s on %s)", WHAT, path,
                layout_of(shapes), cfg.encoder_layers, cfg.dim, dtype, device)
    return model, cfg, spiece


class TextEncoder(nn.Module):
    """UMT5 encoder + tokenizer: prompts in, per-prompt embeddings ``[L_i, dim]`` out (as the official code).

    ``forward(ids, mask)`` runs the network; :meth:`encode` tokenizes, runs, and trims each result to its
    real token count (including ``</s>``).
    """

    def __init__(self, model: UMT5EncoderModel, *, config: UMT5Config, tokenizer: UMT5Tokenizer | None,
                 text_len: int = TEXT_LEN) -> None:
        super().__init__()
        self.model = model
        self.config = config
        self.tokenizer = tokenizer
        self.text_len = int(text_len)
        self.dim = config.dim
        self.compute_device: torch.device | None = None

    @property
    def device(self) -> torch.device:
        """:attr:`compute_device` when set (weights may be left on the offload device), else the embedding's."""
        return self.compute_device if self.compute_device is not None else self.model.shared.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.shared.weight.dtype

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Encode token ids.

        Args:
            ids: [B, L] int64 token ids.
            mask: [B, L] 1 for real tokens, 0 for padding.
        Returns:
            [B, L] x dim hidden states, i.e. [B, L, dim] in the model's dtype (padding rows are meaningless).
        """
        ids = ids.to(self.device)
        mask = mask.to(self.device)
        return self.model(input_ids=ids, attention_mask=mask).last_hidden_state  # [B, L, dim]

    @torch.no_grad()
    def encode(self, texts: Sequence[str]) -> list[torch.Tensor]:
        """Prompts -> list of ``[L_i, dim]`` embeddings, ``L_i`` = real tokens incl. ``</s>`` (<= text_len)."""
        if self.tokenizer is None:
            raise ValueError("This text encoder has no tokenizer; load it with tokenizer_path=... .")
        if isinstance(texts, str):
            texts = [texts]
        if len(texts) == 0:
            return []
        ids, mask = self.tokenizer(texts)  # [B, text_len] each
        hidden = self.forward(ids, mask)  # [B, text_len, dim]
        lengths = mask.sum(dim=1).tolist()
        return [hidden[i, :n].clone() for i, n in enumerate(lengths)]  # each [L_i, dim]


def load_text_encoder(
    path: str | os.PathLike,
    *,
    tokenizer_path: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.bfloat16,
    operations: object | None = None,
) -> TextEncoder:
    """Load the UMT5-XXL encoder and its tokenizer.

    The tokenizer comes from ``tokenizer_path`` (a ``google/umt5-xxl`` folder), else from the
    ``spiece_model`` embedded in ComfyUI's file, else from ``google/umt5-xxl`` next to ``path`` (the
    official Wan2.2-TI2V-5B layout). ``FileNotFoundError`` when none exists.
    """
    path = os.fspath(path)
    model, cfg, spiece = load_umt5_model(path, device=device, dtype=dtype, operations=operations)
    if tokenizer_path is None and spiece is None:
        beside = os.path.join(os.path.dirname(os.path.abspath(path)), TOKENIZER_SUBDIR)
        if os.path.isdir(beside):
            tokenizer_path = beside
        else:
            raise FileNotFoundError(
                f"No tokenizer for {path!r}: it embeds none and there is no {beside!r}. Pass tokenizer_path= "
                "the 'google/umt5-xxl' folder of Wan-AI/Wan2.2-TI2V-5B."
            )
    tokenizer = load_tokenizer(tokenizer_path, spiece_model=spiece, text_len=TEXT_LEN)
    if len(tokenizer) > cfg.vocab_size:
        raise ValueError(
            f"The tokenizer ({tokenizer.source}) has {len(tokenizer)} tokens but the encoder {path!r} only "
            f"{cfg.vocab_size}: they do not belong together. Use the umt5-xxl tokenizer."
        )
    return TextEncoder(model, config=cfg, tokenizer=tokenizer, text_len=TEXT_LEN)


# ----------------------------------------------------------------------------------------------
# Tiny weights
# ----------------------------------------------------------------------------------------------


def random_wan_state_dict(cfg: UMT5Config, *, seed: int = 0, dtype: torch.dtype = torch.bfloat16
                          ) -> dict[str, torch.Tensor]:
    """Deterministic random weights in the Wan layout (norms near 1, linears ~ 1/sqrt(fan_in))."""
    g = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    for name, shape in wan_shapes(cfg).items():
        if name.endswith(("norm1.weight", "norm2.weight")) or name == "norm.weight":
            t = 1.0 + 0.1 * torch.randn(shape, generator=g)
        elif name == "token_embedding.weight":
            t = torch.randn(shape, generator=g)
        elif name.endswith("pos_embedding.embedding.weight"):
            t = 0.5 * torch.randn(shape, generator=g)
        else:
            t = torch.randn(shape, generator=g) / shape[1] ** 0.5
        out[name] = t.to(dtype).contiguous()
    return out


def write_tiny_text_encoder(out_dir: str | os.PathLike, *, seed: int = 0) -> str:
    """Write a tiny UMT5 in the official formats: ``out_dir/models_t5_umt5-xxl-enc-bf16.pth`` (Wan keys, bf16,
    dim 32, 4 heads, ffn 64, 2 layers, vocab = tokenizer size) and the tokenizer folder
    ``out_dir/google/umt5-xxl``. Deterministic for ``seed``. Returns the ``.pth`` path.

    The tiny fusion DiT that goes with it must use ``text_dim`` = 32.
    """
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    vocab = write_tiny_tokenizer(os.path.join(out_dir, TOKENIZER_SUBDIR), seed=seed)
    cfg = UMT5Config(**{**asdict(UMT5_TINY), "vocab_size": vocab})
    sd = random_wan_state_dict(cfg, seed=seed, dtype=torch.bfloat16)
    path = os.path.join(out_dir, OFFICIAL_FILENAME)
    torch.save(sd, path)
    return path
