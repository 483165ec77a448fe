"""LoRA key conventions: map the tensor names of Wan2.2-TI2V-5B / Ovi LoRA files onto the Ovi DiT.

Ovi's video tower is Wan2.2-TI2V-5B (same module names, same shapes), so Wan LoRAs apply to it. The names in
use for one target, all understood here (``N`` is the block index)::

    ours       video_model.blocks.N.self_attn.q.lora_down.weight      (or audio_model.*)
    ComfyUI    diffusion_model.blocks.N.self_attn.q.lora_down.weight  (the Wan module names; also no prefix)
    diffusers  transformer.blocks.N.attn1.to_q.lora_A.weight          (PEFT lora_A / lora_B)
    kohya      lora_unet_blocks_N_self_attn_q.lora_down.weight        (musubi-tuner; also diffusers names)

diffusers -> Wan names: ``attn1`` = ``self_attn``, ``attn2`` = ``cross_attn``, ``to_q/to_k/to_v/to_out.0`` =
``q/k/v/o``, ``ffn.net.0.proj`` / ``ffn.net.2`` = ``ffn.0`` / ``ffn.2``, ``norm2`` = ``norm3`` (the affine
cross-attention norm), ``scale_shift_table`` = ``modulation``, ``proj_out`` = ``head.head``,
``condition_embedder.{time_embedder,text_embedder}.linear_{1,2}`` = ``{time,text}_embedding.{0,2}``,
``condition_embedder.time_proj`` = ``time_projection.1``.

Per target, a file may hold a low-rank pair (``lora_down``/``lora_A`` ``[r, in]``, ``lora_up``/``lora_B``
``[out, r]``, optional ``alpha``), a full weight delta (``.diff``, the weight's shape) and a bias delta
(``.diff_b`` or PEFT's ``lora_B.bias``, ``[out]``). Deltas also reach parameters that are not Linear layers:
norms (``norm3``, ``norm_q``, ``norm_k``), the ``modulation`` tables, ``head.modulation`` and the patch
embedding. Anything else (LoCon/LoHa/LoKr tensors, image-embedding layers of Wan I2V) is reported as unmatched.

Names without a tower (every convention but ours) go to the towers chosen by the caller (the video tower by
default: that is where Wan LoRAs belong). Files in our naming say their tower; ``towers`` then filters.

:func:`map_lora_keys` works on names and shapes only (a safetensors header is enough), so a file can be
checked before any weights load; :func:`check_fit` compares the result with the model's shapes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

TOWERS = ("video_model", "audio_model")

# Ovi module names inside one block / at the top of a tower (the official tensor names)
BLOCK_LINEARS = (
    "self_attn.q", "self_attn.k", "self_attn.v", "self_attn.o",
    "cross_attn.q", "cross_attn.k", "cross_attn.v", "cross_attn.o", "cross_attn.k_fusion", "cross_attn.v_fusion",
    "ffn.0", "ffn.2",
)
TOP_LINEARS = ("text_embedding.0", "text_embedding.2", "time_embedding.0", "time_embedding.2", "time_projection.1",
               "head.head")
# modules whose weight/bias are parameters that deltas may reach (not Linear layers)
BLOCK_PARAM_MODULES = ("self_attn.norm_q", "self_attn.norm_k", "cross_attn.norm_q", "cross_attn.norm_k",
                       "cross_attn.norm_k_fusion", "cross_attn.pre_attn_norm_fusion", "norm3")
TOP_PARAM_MODULES = ("patch_embedding",)
# bare parameters (Wan keeps ``modulation`` as a parameter of the block; Ovi nests it one level deeper)
BLOCK_PARAMS = {"modulation": "modulation.modulation", "modulation.modulation": "modulation.modulation"}
TOP_PARAMS = {"head.modulation": "head.modulation"}

# diffusers module names -> Wan/Ovi names
_DIFFUSERS_BLOCK = {
    "attn1.to_q": "self_attn.q", "attn1.to_k": "self_attn.k", "attn1.to_v": "self_attn.v",
    "attn1.to_out.0": "self_attn.o", "attn1.norm_q": "self_attn.norm_q", "attn1.norm_k": "self_attn.norm_k",
    "attn2.to_q": "cross_attn.q", "attn2.to_k": "cross_attn.k", "attn2.to_v": "cross_attn.v",
    "attn2.to_out.0": "cross_attn.o", "attn2.norm_q": "cross_attn.norm_q", "attn2.norm_k": "cross_attn.norm_k",
    "ffn.net.0.proj": "ffn.0", "ffn.net.2": "ffn.2", "norm2": "norm3", "scale_shift_table": "modulation",
}
_DIFFUSERS_TOP = {
    "proj_out": "head.head", "scale_shift_table": "head.modulation",
    "condition_embedder.time_embedder.linear_1": "time_embedding.0",
    "condition_embedder.time_embedder.linear_2": "time_embedding.2",
    "condition_embedder.time_proj": "time_projection.1",
    "condition_embedder.text_embedder.linear_1": "text_embedding.0",
    "condition_embedder.text_embedder.linear_2": "text_embedding.2",
}

_PREFIXES = ("base_model.model.", "model.diffusion_model.", "diffusion_model.", "transformer.", "model.")
_KOHYA_PREFIXES = ("lora_unet_", "lora_transformer_", "lycoris_")
# key suffix -> kind; longest first
_SUFFIXES = (
    (".lora_down.weight", "down"), (".lora_A.weight", "down"), (".lora.down.weight", "down"),
    (".lora_up.weight", "up"), (".lora_B.weight", "up"), (".lora.up.weight", "up"),
    (".lora_B.bias", "diff_b"), (".alpha", "alpha"), (".diff_b", "diff_b"), (".diff", "diff"),
)
_BLOCK_RE = re.compile(r"^blocks\.(\d+)\.(.+)$")
_KOHYA_BLOCK_RE = re.compile(r"^blocks_(\d+)_(.+)$")

# hints for files made for other model families (matched on the raw key names)
_FOREIGN = (
    (re.compile(r"(down|up|mid)_blocks?[._]|input_blocks|output_blocks|middle_block"),
     "it looks like a Stable Diffusion / SDXL UNet LoRA"),
    (re.compile(r"double_blocks|single_blocks|single_transformer_blocks"), "it looks like a Flux / HunyuanVideo LoRA"),
    (re.compile(r"transformer_blocks[._]\d"), "it looks like an SD3 / LTX / CogVideoX / Mochi transformer LoRA"),
    (re.compile(r"k_img|v_img|img_emb"), "it has image-conditioning layers of Wan2.1 I2V, which Ovi does not have"),
    (re.compile(r"lora_te\d?_|text_model|encoder\.block"), "it has text-encoder layers"),
)


def _kohya_table() -> dict[str, str]:
    """underscored name -> Ovi name, for the block-relative and the top-level vocabulary."""
    table: dict[str, str] = {}
    for name in (*BLOCK_LINEARS, *BLOCK_PARAM_MODULES, *BLOCK_PARAMS):
        table["b:" + name.replace(".", "_")] = name
    for src, dst in _DIFFUSERS_BLOCK.items():
        table["b:" + src.replace(".", "_")] = dst
    for name in (*TOP_LINEARS, *TOP_PARAM_MODULES, *TOP_PARAMS):
        table["t:" + name.replace(".", "_")] = name
    for src, dst in _DIFFUSERS_TOP.items():
        table["t:" + src.replace(".", "_")] = dst
    return table


_KOHYA = _kohya_table()


@dataclass
class LinearSources:
    """Source keys for one Linear layer of the DiT (any may be None)."""

    down: str | None = None
    up: str | None = None
    alpha: str | None = None
    diff: str | None = None
    diff_b: str | None = None


@dataclass
class LoRAKeyMap:
    """Where each tensor of a LoRA file goes.

    Attributes:
        linears: ``{Ovi Linear name (e.g. video_model.blocks.0.self_attn.q): LinearSources}``.
        params: ``{Ovi parameter name (e.g. video_model.blocks.0.norm3.weight): source key}`` (full deltas).
        matched: source keys used; unmatched: ``{source key: why}``.
        conventions: the naming conventions seen (``ovi``, ``comfyui``, ``diffusers``, ``kohya``).
        towers: the towers that receive something.
    """

    linears: dict[str, LinearSources] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    matched: list[str] = field(default_factory=list)
    unmatched: dict[str, str] = field(default_factory=dict)
    conventions: tuple[str, ...] = ()
    towers: tuple[str, ...] = ()

    @property
    def targets(self) -> list[str]:
        return sorted({*self.linears, *self.params})

    def summary(self) -> str:
        parts = [f"{len(self.matched)} keys matched ({', '.join(self.conventions) or 'no'} naming) -> "
                 f"{len(self.linears)} Linear layers and {len(self.params)} other parameters of "
                 f"{', '.join(self.towers) or 'no tower'}"]
        if self.unmatched:
            parts.append(f"{len(self.unmatched)} unmatched, e.g. {_examples(self.unmatched)}")
        return "; ".join(parts)


def _examples(d: Mapping[str, str] | Sequence[str], n: int = 3) -> str:
    if isinstance(d, Mapping):
        return ", ".join(f"{k!r} ({v})" for k, v in list(d.items())[:n]) + (" ..." if len(d) > n else "")
    return ", ".join(repr(k) for k in list(d)[:n]) + (" ..." if len(d) > n else "")


def parse_towers(towers: str | Iterable[str] | None) -> tuple[str, ...] | None:
    """``None``/``"auto"`` -> None (the file's own towers; tower-less names go to the video tower);
    ``"video"``, ``"audio"``, ``"both"`` (or module names, or a comma list) -> tower module names."""
    if towers is None or towers == "auto":
        return None
    if isinstance(towers, str):
        towers = [t for t in re.split(r"[,\s]+", towers) if t]
    out: set[str] = set()
    for t in towers:
        if t == "both":
            out.update(TOWERS)
        elif t in ("video", "audio"):
            out.add(f"{t}_model")
        elif t in TOWERS:
            out.add(t)
        else:
            raise ValueError(f"Unknown tower {t!r}; use 'video', 'audio', 'both' or 'auto'.")
    if not out:
        raise ValueError("No towers given; use 'video', 'audio', 'both' or 'auto'.")
    return tuple(t for t in TOWERS if t in out)


def _split_kind(key: str) -> tuple[str, str | None]:
    for suf, kind in _SUFFIXES:
        if key.endswith(suf):
            return key[: -len(suf)], kind
    return key, None


def _strip_prefix(path: str) -> tuple[str, str | None]:
    """-> (path without the file prefix, convention hint)."""
    for p in _KOHYA_PREFIXES:
        if path.startswith(p):
            return path[len(p):], "kohya"
    for p in _PREFIXES:
        if path.startswith(p) and not path.startswith(TOWERS):
            return path[len(p):], ("diffusers" if p in ("transformer.", "base_model.model.") else "comfyui")
    return path, None


def _resolve(rel: str, *, kohya: bool) -> tuple[str, str, str] | None:
    """Tower-relative source module path -> (Ovi tower-relative name, what: linear|pmod|param, convention)."""
    if kohya:
        m = _KOHYA_BLOCK_RE.match(rel)
        if m:
            name = _KOHYA.get("b:" + m.group(2))
            if name is None:
                return None
            rel = f"blocks.{m.group(1)}.{name}"
        else:
            name = _KOHYA.get("t:" + rel)
            if name is None:
                return None
            rel = name
    m = _BLOCK_RE.match(rel)
    if m:
        idx, inner = m.group(1), m.group(2)
        conv = "comfyui"
        if inner in _DIFFUSERS_BLOCK:
            inner, conv = _DIFFUSERS_BLOCK[inner], "diffusers"
        if inner in BLOCK_LINEARS:
            return f"blocks.{idx}.{inner}", "linear", conv
        if inner in BLOCK_PARAM_MODULES:
            return f"blocks.{idx}.{inner}", "pmod", conv
        if inner in BLOCK_PARAMS:
            return f"blocks.{idx}.{BLOCK_PARAMS[inner]}", "param", conv
        return None
    conv = "comfyui"
    if rel in _DIFFUSERS_TOP:
        rel, conv = _DIFFUSERS_TOP[rel], "diffusers"
    if rel in TOP_LINEARS:
        return rel, "linear", conv
    if rel in TOP_PARAM_MODULES:
        return rel, "pmod", conv
    if rel in TOP_PARAMS:
        return TOP_PARAMS[rel], "param", conv
    return None


def map_lora_keys(shapes: Mapping[str, Sequence[int]], *,
                  towers: str | Iterable[str] | None = None) -> LoRAKeyMap:
    """Map the keys of a LoRA file (``{key: shape}``; tensors work too) onto Ovi names.

    ``towers``: see :func:`parse_towers`. Raises ``ValueError`` when no key matches (the message names the
    conventions understood and, when it can tell, which model family the file is for).
    """
    chosen = parse_towers(towers)
    out = LoRAKeyMap()
    convs: set[str] = set()
    got_towers: set[str] = set()
    for key in shapes:
        path, kind = _split_kind(key)
        if kind is None:
            out.unmatched[key] = "not a LoRA tensor (expected lora_down/lora_up/lora_A/lora_B/alpha/diff/diff_b)"
            continue
        tower = next((t for t in TOWERS if path.startswith(t + ".")), None)
        hint = None
        if tower is None:
            path, hint = _strip_prefix(path)
            tower = next((t for t in TOWERS if path.startswith(t + ".")), None)
        if tower is not None:
            rel, targets, conv0 = path[len(tower) + 1:], [tower], "ovi"
            if chosen is not None and tower not in chosen:
                out.unmatched[key] = f"for the {tower}, which was not chosen"
                continue
        else:
            rel, targets, conv0 = path, list(chosen or ("video_model",)), None
        res = _resolve(rel, kohya=hint == "kohya")
        if res is None:
            out.unmatched[key] = "no such layer in a Wan2.2-5B / Ovi tower"
            continue
        name, what, conv = res
        conv = conv0 or ("kohya" if hint == "kohya" else "diffusers" if hint == "diffusers" else conv)
        if what == "linear":
            if kind not in ("down", "up", "alpha", "diff", "diff_b"):
                out.unmatched[key] = "unsupported tensor kind"
                continue
            for t in targets:
                src = out.linears.setdefault(f"{t}.{name}", LinearSources())
                setattr(src, kind, key)
        else:
            if kind not in ("diff", "diff_b", "alpha"):
                out.unmatched[key] = "a low-rank pair on a layer that is not Linear (LoCon) is not supported"
                continue
            if kind == "alpha":
                out.matched.append(key)
                continue
            if what == "pmod":
                pname = f"{name}.{'weight' if kind == 'diff' else 'bias'}"
            elif kind == "diff":
                pname = name
            else:
                out.unmatched[key] = "a bias delta for a parameter without a bias"
                continue
            for t in targets:
                out.params[f"{t}.{pname}"] = key
        out.matched.append(key)
        convs.add(conv)
        got_towers.update(targets)
    # a pair needs both halves; an alpha alone is nothing
    for name, src in list(out.linears.items()):
        if (src.down is None) != (src.up is None):
            have = src.down or src.up
            raise ValueError(f"LoRA file is incomplete: {have!r} has no matching "
                             f"{'up (lora_up / lora_B)' if src.up is None else 'down (lora_down / lora_A)'} weight.")
        if src.down is None and src.diff is None and src.diff_b is None:
            del out.linears[name]
    out.conventions = tuple(sorted(convs))
    out.towers = tuple(t for t in TOWERS if any(n.startswith(t + ".") for n in out.targets))
    if not out.targets:
        raise ValueError(no_match_message(shapes, out.unmatched))
    return out


def no_match_message(keys: Iterable[str], unmatched: Mapping[str, str]) -> str:
    keys = list(keys)
    joined = " ".join(keys[:200])
    why = next((msg for rx, msg in _FOREIGN if rx.search(joined)), None)
    return (
        "Not a LoRA file for Ovi / Wan2.2-TI2V-5B: none of its keys name a layer of the DiT"
        + (f" ({why})" if why else "")
        + f"; e.g. {_examples(list(unmatched) or keys)}. Understood: 'video_model.blocks.N.self_attn.q.lora_down"
        ".weight' (ours), 'diffusion_model.blocks.N.self_attn.q.lora_down.weight' (ComfyUI/Wan), "
        "'transformer.blocks.N.attn1.to_q.lora_A.weight' (diffusers/PEFT), 'lora_unet_blocks_N_self_attn_q"
        ".lora_down.weight' (kohya/musubi), with '.diff' / '.diff_b' full deltas."
    )


def check_fit(keymap: LoRAKeyMap, shapes: Mapping[str, Sequence[int]],
              model_shapes: Mapping[str, Sequence[int]]) -> LoRAKeyMap:
    """Check every target against the model's parameter shapes (``{official name: shape}``).

    Targets on the audio tower that came from tower-less (Wan) names and do not fit it (the head and patch
    embedding are other sizes there) are dropped and reported as unmatched. Any other missing layer or shape
    mismatch means the file is for another model: ``ValueError`` naming the first offenders and the widths.
    Returns ``keymap`` (changed in place).
    """
    bad: list[str] = []
    widths: set[int] = set()

    def shape(key: str | None) -> tuple[int, ...] | None:
        return None if key is None else tuple(int(s) for s in shapes[key])

    def fits(name: str, src: LinearSources) -> str | None:
        w = model_shapes.get(f"{name}.weight")
        if w is None or len(w) != 2:
            return "no such Linear layer in the model"
        out_f, in_f = int(w[0]), int(w[1])
        d, u = shape(src.down), shape(src.up)
        if d is not None:
            if len(d) != 2 or len(u) != 2 or d[0] != u[1]:
                return f"down {list(d)} and up {list(u)} do not pair"
            if (d[1], u[0]) != (in_f, out_f):
                widths.add(d[1])
                return f"LoRA {d[1]}->{u[0]}, model {in_f}->{out_f}"
        if src.diff is not None and shape(src.diff) != (out_f, in_f):
            return f"diff {list(shape(src.diff))}, model weight {[out_f, in_f]}"
        if src.diff_b is not None:
            b = model_shapes.get(f"{name}.bias")
            if b is None or shape(src.diff_b) != tuple(int(s) for s in b):
                return f"diff_b {list(shape(src.diff_b))}, model bias {None if b is None else list(b)}"
        return None

    def from_towerless(keys: Iterable[str | None]) -> bool:
        return all(k is None or not k.startswith(TOWERS) for k in keys)

    for name, src in list(keymap.linears.items()):
        why = fits(name, src)
        if why is None:
            continue
        keys = (src.down, src.up, src.alpha, src.diff, src.diff_b)
        if name.startswith("audio_model.") and not name.startswith("audio_model.blocks.") and from_towerless(keys):
            del keymap.linears[name]
            for k in keys:
                if k is not None:
                    keymap.unmatched.setdefault(k, "does not fit the audio tower")
            continue
        bad.append(f"{name}: {why}")
    for pname, key in list(keymap.params.items()):
        want = model_shapes.get(pname)
        have = shape(key)
        if want is not None and tuple(int(s) for s in want) == have:
            continue
        if pname.startswith("audio_model.") and from_towerless([key]):
            del keymap.params[pname]
            keymap.unmatched.setdefault(key, "does not fit the audio tower")
            continue
        bad.append(f"{pname}: delta {list(have)}, model {None if want is None else list(want)}")
    if bad:
        model_dim = model_shapes.get("video_model.blocks.0.self_attn.q.weight", [None])[0]
        hint = ""
        if widths and model_dim is not None and model_dim not in widths:
            hint = (f" The LoRA's layers are {sorted(widths)} wide, the model's {model_dim}"
                    + (": a Wan 14B LoRA (width 5120) does not apply to Ovi; use one made for Wan2.2-TI2V-5B."
                       if 5120 in widths else "."))
        raise ValueError(
            f"LoRA does not fit this model (was it made for another model or size?): {len(bad)} layers do not "
            f"match, e.g. {_examples(bad)}.{hint}"
        )
    keymap.towers = tuple(t for t in TOWERS if any(n.startswith(t + ".") for n in keymap.targets))
    return keymap
