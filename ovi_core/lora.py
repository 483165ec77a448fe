"""LoRA for the twin towers of the Ovi fusion DiT.

A LoRA adds ``strength * (alpha / rank) * up(down(dropout(x)))`` to the output of a chosen ``nn.Linear``
of the DiT. The adapters live in a separate :class:`LoRANetwork` and reach the DiT through forward
hooks, so the DiT keeps its official module names and state dict (strict loads still work, and fp8
Linear subclasses are left as they are).

Targets (both towers, every block), chosen by group or by single projection:

* ``self_attn``: ``self_attn.{q,k,v,o}``
* ``cross_attn``: ``cross_attn.{q,k,v,o}`` (text cross-attention; ``q``/``o`` are shared with fusion)
* ``fusion``: ``cross_attn.{k_fusion,v_fusion}`` (the audio<->video bridge)

The default is all attention, the layers the paper fine-tunes (FFNs frozen).

File format: safetensors with ComfyUI-style keys under the official module paths::

    video_model.blocks.0.self_attn.q.lora_down.weight   [rank, in]
    video_model.blocks.0.self_attn.q.lora_up.weight     [out, rank]
    video_model.blocks.0.self_attn.q.alpha              []  (float32)

and metadata ``ovi.lora.*`` (rank, alpha, targets, towers, base model version). Loading also accepts the
Wan2.2-TI2V-5B LoRA conventions (ComfyUI, diffusers/PEFT, kohya; see :mod:`ovi_core.lora_keys`), the FFN and
embedding layers, and full deltas (``.diff`` / ``.diff_b``) of Linear layers, norms and modulation tables.
Tower-less (Wan) names go to the video tower unless ``towers`` says otherwise.

Usage::

    net = load_lora(model, "style.safetensors", strength=0.8)   # active at once; several stack
    net.strength = 0.5; net.merge(); net.unmerge(); net.detach()
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from ovi_core import lora_keys
from ovi_core.fileio import atomic_path
from ovi_core.lora_deltas import LinearDelta, ParamPatch, param_key

logger = logging.getLogger(__name__)

TOWERS = ("video_model", "audio_model")

TARGET_GROUPS: dict[str, tuple[str, ...]] = {
    "self_attn": ("self_attn.q", "self_attn.k", "self_attn.v", "self_attn.o"),
    "cross_attn": ("cross_attn.q", "cross_attn.k", "cross_attn.v", "cross_attn.o"),
    "fusion": ("cross_attn.k_fusion", "cross_attn.v_fusion"),
}
ALL_TARGETS: tuple[str, ...] = tuple(s for g in TARGET_GROUPS.values() for s in g)
DEFAULT_TARGETS: tuple[str, ...] = ("self_attn", "cross_attn", "fusion")

FORMAT_VERSION = "1"
_BLOCK_RE = re.compile(r"^(video_model|audio_model)\.blocks\.(\d+)\.(.+)$")
_PREFIXES = ("base_model.model.", "diffusion_model.", "model.diffusion_model.", "model.")


def expand_targets(targets: str | Iterable[str]) -> tuple[str, ...]:
    """Group names (``self_attn``, ``cross_attn``, ``fusion``, ``all``) and single projections
    (``self_attn.q``, ``cross_attn.k_fusion``, ...) -> sorted unique projection suffixes."""
    if isinstance(targets, str):
        targets = [t for t in re.split(r"[,\s]+", targets) if t]
    out: set[str] = set()
    for t in targets:
        if t == "all":
            out.update(ALL_TARGETS)
        elif t in TARGET_GROUPS:
            out.update(TARGET_GROUPS[t])
        elif t in ALL_TARGETS:
            out.add(t)
        else:
            raise ValueError(
                f"Unknown LoRA target {t!r}; use groups {sorted(TARGET_GROUPS)} or 'all', or single projections "
                f"such as {ALL_TARGETS[:2]}."
            )
    if not out:
        raise ValueError("No LoRA targets given; use e.g. 'self_attn,cross_attn,fusion'.")
    return tuple(s for s in ALL_TARGETS if s in out)


def _check_towers(towers: str | Iterable[str]) -> tuple[str, ...]:
    if isinstance(towers, str):
        towers = [t for t in re.split(r"[,\s]+", towers) if t]
    names = {"video": "video_model", "audio": "audio_model", "both": None}
    out: list[str] = []
    for t in towers:
        if t == "both":
            out.extend(TOWERS)
        elif t in names:
            out.append(names[t])
        elif t in TOWERS:
            out.append(t)
        else:
            raise ValueError(f"Unknown tower {t!r}; use 'video', 'audio' or 'both'.")
    if not out:
        raise ValueError("No towers given; use 'video', 'audio' or 'both'.")
    return tuple(t for t in TOWERS if t in out)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The DiT inside DDP/FSDP/compile wrappers or a :class:`LoRAModel` proxy."""
    seen = 0
    while seen < 8:
        seen += 1
        if isinstance(model, LoRAModel):
            model = model.base
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif hasattr(model, "module") and isinstance(model.module, nn.Module):
            model = model.module
        else:
            break
    return model


def find_target_modules(
    model: nn.Module, *, targets: str | Iterable[str] = DEFAULT_TARGETS, towers: str | Iterable[str] = TOWERS
) -> dict[str, nn.Linear]:
    """``{official module name: Linear}`` of the DiT for the chosen targets and towers, in model order."""
    suffixes = set(expand_targets(targets))
    tw = set(_check_towers(towers))
    found: dict[str, nn.Linear] = {}
    for name, mod in unwrap_model(model).named_modules():
        m = _BLOCK_RE.match(name)
        if m and m.group(1) in tw and m.group(3) in suffixes and isinstance(mod, nn.Linear):
            found[name] = mod
    if not found:
        raise ValueError(
            f"The model has no Linear layers for LoRA targets {sorted(suffixes)} in towers {sorted(tw)}; "
            "is it an Ovi fusion model (video_model/audio_model with blocks.N.self_attn/cross_attn)?"
        )
    return found


@dataclass(frozen=True)
class LoRAConfig:
    """Where LoRA goes and how big it is. ``alpha`` None means ``alpha = rank`` (scale 1)."""

    rank: int = 16
    alpha: float | None = None
    dropout: float = 0.0
    targets: tuple[str, ...] = DEFAULT_TARGETS
    towers: tuple[str, ...] = TOWERS

    def __post_init__(self) -> None:
        if int(self.rank) < 1:
            raise ValueError(f"LoRA rank must be at least 1, got {self.rank}.")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {self.dropout}.")
        object.__setattr__(self, "rank", int(self.rank))
        object.__setattr__(self, "targets", expand_targets(self.targets))
        object.__setattr__(self, "towers", _check_towers(self.towers))

    @property
    def effective_alpha(self) -> float:
        return float(self.rank if self.alpha is None else self.alpha)


class LoRAAdapter(nn.Module):
    """One low-rank pair for a Linear ``in -> out``: ``lora_down [rank, in]``, ``lora_up [out, rank]``."""

    def __init__(self, in_features: int, out_features: int, *, rank: int, alpha: float, dropout: float = 0.0,
                 device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.rank = int(rank)
        self.alpha = float(alpha)
        self.lora_down = nn.Linear(in_features, rank, bias=False, device=device, dtype=dtype)
        self.lora_up = nn.Linear(rank, out_features, bias=False, device=device, dtype=dtype)
        self.dropout = float(dropout)
        nn.init.kaiming_uniform_(self.lora_down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_up.weight)

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [..., in]`` -> ``scale * up(down(dropout(x))) [..., out]``, computed in the adapter's dtype."""
        w_down, w_up = self.lora_down.weight, self.lora_up.weight
        h = x.to(dtype=w_down.dtype, device=w_down.device)
        if self.dropout > 0 and self.training:
            h = F.dropout(h, p=self.dropout, training=True)
        return F.linear(F.linear(h, w_down), w_up) * self.scale

    def delta_weight(self) -> torch.Tensor:
        """``scale * up @ down`` ``[out, in]`` in float32."""
        return (self.lora_up.weight.float() @ self.lora_down.weight.float()) * self.scale


def _remove_handles(handles: list) -> None:
    for h in handles:
        h.remove()


def _key(name: str) -> str:
    return name.replace(".", "__")


class LoRANetwork(nn.Module):
    """A set of adapters keyed by official module names, attachable to a DiT by forward hooks.

    ``strength`` scales the whole network at run time; ``enabled`` switches it off without detaching.
    """

    def __init__(self, shapes: Mapping[str, tuple[int, int]], *, rank: int, alpha: float, dropout: float = 0.0,
                 alphas: Mapping[str, float] | None = None, ranks: Mapping[str, int] | None = None,
                 metadata: Mapping[str, str] | None = None, strength: float = 1.0,
                 device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> None:
        """``shapes``: ``{module name: (in_features, out_features)}``."""
        super().__init__()
        self.rank = int(rank)
        self.alpha = float(alpha)
        self.names: dict[str, str] = {}
        self.adapters = nn.ModuleDict()
        for name, (fin, fout) in shapes.items():
            r = int(ranks[name]) if ranks and name in ranks else self.rank
            a = float(alphas[name]) if alphas and name in alphas else self.alpha
            self.adapters[_key(name)] = LoRAAdapter(fin, fout, rank=r, alpha=a, dropout=dropout,
                                                    device=device, dtype=dtype)
            self.names[_key(name)] = name
        self.metadata: dict[str, str] = dict(metadata or {})
        self.strength = float(strength)
        self.enabled = True
        self.deltas = nn.ModuleDict()  # full deltas of Linear layers: key -> LinearDelta
        self.param_deltas = nn.Module()  # full deltas of other parameters: buffers named key
        self.delta_names: dict[str, str] = {}
        self.param_names: dict[str, str] = {}
        self.report: lora_keys.LoRAKeyMap | None = None  # how the file's keys were matched (files only)
        self._handles: list = []
        self._attached: dict[str, nn.Linear] = {}
        self._params: dict[str, nn.Parameter] = {}
        self._patch = ParamPatch()
        self._merged: dict[str, float] = {}

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def for_model(cls, model: nn.Module, config: LoRAConfig, *, device: torch.device | str | None = None,
                  dtype: torch.dtype = torch.float32, seed: int | None = None) -> LoRANetwork:
        """Fresh adapters (``up`` zero, so the model is unchanged) for ``config``'s targets in ``model``."""
        mods = find_target_modules(model, targets=config.targets, towers=config.towers)
        if device is None:
            device = next(iter(mods.values())).weight.device
        shapes = {n: (m.in_features, m.out_features) for n, m in mods.items()}
        meta = {"ovi.lora.targets": ",".join(config.targets), "ovi.lora.towers": ",".join(config.towers)}
        if seed is None:
            return cls(shapes, rank=config.rank, alpha=config.effective_alpha, dropout=config.dropout,
                       metadata=meta, device=device, dtype=dtype)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            net = cls(shapes, rank=config.rank, alpha=config.effective_alpha, dropout=config.dropout,
                      metadata=meta, device="cpu", dtype=dtype)
        return net.to(device)

    def module_names(self) -> list[str]:
        return list(self.names.values())

    def adapter(self, name: str) -> LoRAAdapter:
        return self.adapters[_key(name)]

    def add_deltas(self, *, linear: Mapping[str, tuple[torch.Tensor | None, torch.Tensor | None]] | None = None,
                   params: Mapping[str, torch.Tensor] | None = None, device: torch.device | str | None = None,
                   dtype: torch.dtype = torch.float32) -> None:
        """Full deltas: ``linear`` ``{Linear name: (weight delta [out, in] | None, bias delta [out] | None)}``,
        ``params`` ``{parameter name: delta of its shape}`` (norms, modulation, patch embedding). They scale
        with ``strength`` like the low-rank pairs. Add them before :meth:`attach`."""
        if self._handles:
            raise ValueError("Add deltas before attaching the LoRA.")

        def conv(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.detach().to(device=device, dtype=dtype).clone()

        for name, (w, b) in (linear or {}).items():
            if w is None and b is None:
                continue
            self.deltas[_key(name)] = LinearDelta(conv(w), conv(b))
            self.delta_names[_key(name)] = name
        for pname, d in (params or {}).items():
            self.param_deltas.register_buffer(_key(pname), conv(d))
            self.param_names[_key(pname)] = pname

    def target_names(self) -> list[str]:
        """Every Linear layer and parameter this network changes (official names)."""
        return sorted({*self.names.values(), *self.delta_names.values(), *self.param_names.values()})

    # -- hooks ----------------------------------------------------------------------------------

    def _make_hook(self, key: str, *, weak: bool):
        ref = weakref.ref(self) if weak else (lambda net=self: net)

        def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
            net = ref()
            if net is None or not net.enabled or net.strength == 0.0 or key in net._merged:
                return output
            delta = net.adapters[key](args[0]) if key in net.adapters else None
            if key in net.deltas:
                d = net.deltas[key](args[0])
                delta = d if delta is None else delta + d
            return output + (delta * net.strength).to(dtype=output.dtype, device=output.device)

        return hook

    def _make_param_hooks(self, *, weak: bool):
        """Root-model hooks that swap patched copies of the delta'd parameters in for one call and put the
        originals back afterwards (also when the call raises), so the base weights are never changed."""
        ref = weakref.ref(self) if weak else (lambda net=self: net)

        def pre(module: nn.Module, args: tuple) -> None:
            net = ref()
            if net is None or not net.enabled or net.strength == 0.0 or net._patch.active:
                return
            todo = {k: p for k, p in net._params.items() if k not in net._merged}
            net._patch.apply(todo, lambda k: getattr(net.param_deltas, k), net.strength)

        def post(module: nn.Module, args: tuple, output):
            net = ref()
            if net is not None:
                net._restore_params()
            return output

        return pre, post

    def _restore_params(self) -> None:
        self._patch.restore()

    def attach(self, model: nn.Module, *, strict: bool = True, weak: bool = False) -> LoRANetwork:
        """Hook the adapters into ``model``'s Linears. ``strict``: every adapter must find its layer
        with matching shape (else ``ValueError`` naming the first offenders). ``weak``: the hooks do not
        keep this network alive; they are removed when it is garbage-collected."""
        if self._handles:
            raise ValueError("This LoRA is already attached; call detach() first.")
        root = unwrap_model(model)
        modules = dict(root.named_modules())
        params = dict(root.named_parameters())
        missing, bad = [], []
        for key, name in {**self.names, **self.delta_names}.items():
            mod = modules.get(name)
            if not isinstance(mod, nn.Linear):
                missing.append(name)
                continue
            fit = self._fits(key, mod)
            if fit is not None:
                bad.append(f"{name}: {fit}")
                continue
            self._handles.append(mod.register_forward_hook(self._make_hook(key, weak=weak)))
            self._attached[key] = mod
        for key, pname in self.param_names.items():
            p = params.get(pname)
            d = getattr(self.param_deltas, key)
            if p is None:
                missing.append(pname)
            elif p.shape != d.shape:
                bad.append(f"{pname}: delta {list(d.shape)}, model {list(p.shape)}")
            elif not p.dtype.is_floating_point or p.dtype.itemsize < 2:
                bad.append(f"{pname}: cannot patch {p.dtype} parameters")
            else:
                self._params[key] = p
        if self._params:
            pre, post = self._make_param_hooks(weak=weak)
            self._handles.append(root.register_forward_pre_hook(pre))
            # prepended: stacked LoRAs restore in the reverse order of patching
            self._handles.append(root.register_forward_hook(post, prepend=True, always_call=True))
        if strict and (missing or bad):
            self.detach()
            raise ValueError(
                "LoRA does not fit this model (was it trained for another model size?). "
                f"missing layers: {missing[:5]}{' ...' if len(missing) > 5 else ''}; "
                f"shape mismatches: {bad[:5]}{' ...' if len(bad) > 5 else ''}"
            )
        if weak:
            weakref.finalize(self, _remove_handles, list(self._handles))
        if missing or bad:
            logger.warning("LoRA: %d layers not found and %d shape mismatches were skipped", len(missing), len(bad))
        return self

    def _fits(self, key: str, mod: nn.Linear) -> str | None:
        if key in self.adapters:
            ad = self.adapters[key]
            if (mod.in_features, mod.out_features) != (ad.lora_down.in_features, ad.lora_up.out_features):
                return (f"lora {ad.lora_down.in_features}->{ad.lora_up.out_features}, "
                        f"model {mod.in_features}->{mod.out_features}")
        if key in self.deltas:
            dl = self.deltas[key]
            if dl.weight is not None and tuple(dl.weight.shape) != (mod.out_features, mod.in_features):
                return f"diff {list(dl.weight.shape)}, model {[mod.out_features, mod.in_features]}"
            if dl.bias is not None and (mod.bias is None or dl.bias.shape != mod.bias.shape):
                return f"diff_b {list(dl.bias.shape)}, model bias {None if mod.bias is None else list(mod.bias.shape)}"
        return None

    def detach(self) -> None:
        """Remove the hooks (unmerging first if merged)."""
        if self._merged:
            self.unmerge()
        self._restore_params()
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._attached.clear()
        self._params.clear()

    @property
    def attached(self) -> bool:
        return bool(self._handles)

    # -- merge ----------------------------------------------------------------------------------

    @torch.no_grad()
    def merge(self) -> None:
        """Add ``strength * delta`` into the base weights (the hooks then pass through). fp8 weights
        cannot be merged (that would re-quantize them); keep such LoRAs unmerged."""
        if not self._attached and not self._params:
            raise ValueError("Attach the LoRA to a model before merging it.")
        for key, mod in self._attached.items():
            w = mod.weight
            if key not in self._merged and w.dtype not in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
                raise ValueError(f"Cannot merge a LoRA into {w.dtype} weights ({self._attached_name(key)}); "
                                 "use it unmerged (the default) or load the model in bf16.")
        for key in [*self._attached, *self._params]:
            if key not in self._merged:
                self._add_delta(key, self.strength)
                self._merged[key] = self.strength

    def _attached_name(self, key: str) -> str:
        return self.names.get(key) or self.delta_names.get(key) or self.param_names.get(key, key)

    def _add_delta(self, key: str, scale: float) -> None:
        def add(p: torch.Tensor, d: torch.Tensor) -> None:
            p.copy_((p.float() + d.to(device=p.device, dtype=torch.float32) * scale).to(p.dtype))

        if key in self._params:
            add(self._params[key], getattr(self.param_deltas, key))
            return
        mod = self._attached[key]
        if key in self.adapters:
            add(mod.weight, self.adapters[key].delta_weight())
        if key in self.deltas:
            dl = self.deltas[key]
            if dl.weight is not None:
                add(mod.weight, dl.weight)
            if dl.bias is not None:
                add(mod.bias, dl.bias)

    @torch.no_grad()
    def unmerge(self) -> None:
        """Subtract what :meth:`merge` added (exact in fp32; within rounding in bf16)."""
        for key, s in list(self._merged.items()):
            self._add_delta(key, -s)
            del self._merged[key]

    @property
    def merged(self) -> bool:
        return bool(self._merged)

    # -- state ------------------------------------------------------------------------------------

    def lora_state_dict(self, *, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
        """ComfyUI-style ``{name}.lora_down.weight``, ``{name}.lora_up.weight``, ``{name}.alpha``."""
        sd: dict[str, torch.Tensor] = {}
        for key, name in self.names.items():
            ad = self.adapters[key]
            dn, up = ad.lora_down.weight.detach(), ad.lora_up.weight.detach()
            sd[f"{name}.lora_down.weight"] = (dn if dtype is None else dn.to(dtype)).cpu().contiguous()
            sd[f"{name}.lora_up.weight"] = (up if dtype is None else up.to(dtype)).cpu().contiguous()
            sd[f"{name}.alpha"] = torch.tensor(ad.alpha, dtype=torch.float32)
        cast = (lambda t: t.detach().cpu().contiguous()) if dtype is None else (
            lambda t: t.detach().to(dtype).cpu().contiguous())
        for key, name in self.delta_names.items():
            dl = self.deltas[key]
            if dl.weight is not None:
                sd[f"{name}.diff"] = cast(dl.weight)
            if dl.bias is not None:
                sd[f"{name}.diff_b"] = cast(dl.bias)
        for key, pname in self.param_names.items():
            sd[param_key(pname)] = cast(getattr(self.param_deltas, key))
        return sd

    @torch.no_grad()
    def load_lora_state_dict(self, sd: Mapping[str, torch.Tensor]) -> None:
        """Copy weights from a :meth:`lora_state_dict`-shaped dict (exact key set required)."""
        parsed = parse_lora_state_dict(sd)
        if set(parsed) != set(self.names.values()):
            extra = sorted(set(parsed) - set(self.names.values()))
            miss = sorted(set(self.names.values()) - set(parsed))
            raise ValueError(f"LoRA state does not match this network: missing {miss[:5]}, unexpected {extra[:5]}.")
        bad = [f"{n}: file {list(d.shape)}/{list(u.shape)}, network {list(self.adapter(n).lora_down.weight.shape)}/"
               f"{list(self.adapter(n).lora_up.weight.shape)}" for n, (d, u, _) in parsed.items()
               if d.shape != self.adapter(n).lora_down.weight.shape or u.shape != self.adapter(n).lora_up.weight.shape]
        if bad:
            raise ValueError(f"LoRA state does not match this network's shapes (another rank or model size?): "
                             f"{bad[:3]}.")
        for name, (down, up, alpha) in parsed.items():
            ad = self.adapter(name)
            ad.lora_down.weight.copy_(down)
            ad.lora_up.weight.copy_(up)
            ad.alpha = float(alpha)

    def save(self, path: str | os.PathLike, *, base_version: str | None = None, dtype: torch.dtype | None = None,
             extra_metadata: Mapping[str, str] | None = None) -> str:
        """Write the LoRA as safetensors (atomically: temp file then rename)."""
        from safetensors.torch import save_file

        meta = {
            "ovi.lora.format": FORMAT_VERSION,
            "ovi.lora.rank": str(self.rank),
            "ovi.lora.alpha": repr(self.alpha),
            **self.metadata,
        }
        if base_version is not None:
            meta["ovi.lora.base_version"] = str(base_version)
        meta.update({str(k): str(v) for k, v in (extra_metadata or {}).items()})
        path = os.fspath(path)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with atomic_path(path, suffix=".safetensors") as tmp:
            save_file(self.lora_state_dict(dtype=dtype), tmp, metadata=meta)
        return path


# ----------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------


def parse_lora_state_dict(sd: Mapping[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, torch.Tensor, float]]:
    """``{module name: (down [r, in], up [out, r], alpha)}`` from ComfyUI (``lora_down``/``lora_up``/
    ``alpha``) or PEFT (``lora_A``/``lora_B``) keys, with or without a ``diffusion_model.`` prefix."""
    downs: dict[str, torch.Tensor] = {}
    ups: dict[str, torch.Tensor] = {}
    alphas: dict[str, float] = {}
    unknown = []
    for k, v in sd.items():
        for p in _PREFIXES:
            if k.startswith(p) and not k.startswith(TOWERS):
                k = k[len(p):]
                break
        for suf, table in ((".lora_down.weight", downs), (".lora_A.weight", downs),
                           (".lora_up.weight", ups), (".lora_B.weight", ups)):
            if k.endswith(suf):
                table[k[: -len(suf)]] = v
                break
        else:
            if k.endswith(".alpha") and v.numel() == 1:
                alphas[k[: -len(".alpha")]] = float(v.float().item())
            else:
                unknown.append(k)
    if unknown:
        raise ValueError(f"Not a LoRA file for Ovi: unexpected keys {unknown[:5]} (expected '<module>.lora_down.weight'"
                         ", '<module>.lora_up.weight', '<module>.alpha').")
    if set(downs) != set(ups):
        odd = sorted(set(downs) ^ set(ups))
        raise ValueError(f"LoRA file is incomplete: layers without both down and up weights: {odd[:5]}.")
    out = {}
    for name in downs:
        d, u = downs[name], ups[name]
        if d.dim() != 2 or u.dim() != 2 or d.shape[0] != u.shape[1]:
            raise ValueError(f"LoRA layer {name}: down {list(d.shape)} and up {list(u.shape)} do not pair.")
        out[name] = (d, u, alphas.get(name, float(d.shape[0])))
    return out


def read_lora(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a LoRA file (safetensors, or a ``.pt`` read with ``weights_only``)."""
    from ovi_core import checkpoints as ck
    from ovi_core.checkpoint_id import identify

    path = os.fspath(path)
    if os.path.isfile(path):  # refuse other models from the header, before reading any tensor
        try:
            ident = identify(ck.peek(path), path=path)
        except ck.CheckpointError as e:
            raise ck.CheckpointError(f"LoRA file: {e}") from e
        if ident.component != "lora":
            raise ck.CheckpointError(f"Not a LoRA file: {path!r} looks like {ident.description}. Pick a LoRA file "
                                     "(from OviTrainLoRA or `python -m ovi_core train`) for the LoRA loader.")
    return ck.read_tensor_file(path, what="LoRA file")


def network_from_state_dict(sd: Mapping[str, torch.Tensor], *, metadata: Mapping[str, str] | None = None,
                            strength: float = 1.0, device: torch.device | str | None = None,
                            dtype: torch.dtype = torch.float32, towers: str | Iterable[str] | None = None,
                            keymap: lora_keys.LoRAKeyMap | None = None) -> LoRANetwork:
    """A :class:`LoRANetwork` (not attached) from a LoRA state dict in any convention of
    :mod:`ovi_core.lora_keys`. ``towers``: where tower-less (Wan) names go (None: the video tower), and a
    filter for names that carry a tower. ``keymap``: a mapping already made (and checked) by the caller."""
    km = keymap if keymap is not None else lora_keys.map_lora_keys(sd, towers=towers)
    pairs = {n: s for n, s in km.linears.items() if s.down is not None}
    shapes = {n: (sd[s.down].shape[1], sd[s.up].shape[0]) for n, s in pairs.items()}
    ranks = {n: int(sd[s.down].shape[0]) for n, s in pairs.items()}
    alphas = {n: (float(sd[s.alpha].float().item()) if s.alpha is not None else float(ranks[n]))
              for n, s in pairs.items()}
    first = next(iter(pairs), None)
    net = LoRANetwork(shapes, rank=ranks[first] if first else 0, alpha=alphas[first] if first else 0.0, ranks=ranks,
                      alphas=alphas, metadata={k: v for k, v in (metadata or {}).items() if k.startswith("ovi.lora.")},
                      strength=strength, device="meta", dtype=dtype)
    net = net.to_empty(device=device or "cpu")
    with torch.no_grad():
        for n, s in pairs.items():
            ad = net.adapter(n)
            ad.lora_down.weight.copy_(sd[s.down])
            ad.lora_up.weight.copy_(sd[s.up])
    net.add_deltas(
        linear={n: (None if s.diff is None else sd[s.diff], None if s.diff_b is None else sd[s.diff_b])
                for n, s in km.linears.items()},
        params={pname: sd[key] for pname, key in km.params.items()},
        device=device or "cpu", dtype=dtype,
    )
    net.report = km
    return net


def check_lora_file(path: str | os.PathLike, *, towers: str | Iterable[str] | None = None) -> lora_keys.LoRAKeyMap:
    """Map a LoRA file's keys from its header alone (no tensors read, no model needed), so that a wrong file
    fails before any weights load. Shapes are checked later, against the model (:func:`load_lora`)."""
    from ovi_core import checkpoints as ck

    if not os.path.isfile(os.fspath(path)):
        raise FileNotFoundError(f"LoRA file not found: {os.fspath(path)!r}.")
    infos = ck.peek(path)
    try:
        return lora_keys.map_lora_keys({k: tuple(v.shape) for k, v in infos.items()}, towers=towers)
    except ValueError as e:
        raise ValueError(f"{os.path.basename(os.fspath(path))}: {e}") from None


def read_lora_for(model: nn.Module, path: str | os.PathLike, *, towers: str | Iterable[str] | None = None
                  ) -> tuple[dict[str, torch.Tensor], dict[str, str], lora_keys.LoRAKeyMap]:
    """Read a LoRA file, map its keys onto ``model`` and check that they fit (``ValueError`` otherwise).
    Returns the tensors, the metadata and the key map (matched / unmatched keys)."""
    sd, meta = read_lora(path)
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    try:
        km = lora_keys.map_lora_keys(shapes, towers=towers)
        model_shapes = {n: tuple(p.shape) for n, p in unwrap_model(model).named_parameters()}
        lora_keys.check_fit(km, shapes, model_shapes)
    except ValueError as e:
        raise ValueError(f"{os.path.basename(os.fspath(path))}: {e}") from None
    return sd, meta, km


def load_lora(model: nn.Module, path: str | os.PathLike, *, strength: float = 1.0,
              device: torch.device | str | None = None, dtype: torch.dtype = torch.float32,
              strict: bool = True, weak: bool = False, towers: str | Iterable[str] | None = None) -> LoRANetwork:
    """Read a LoRA file and attach it to ``model`` with ``strength`` (adapters stay separate: call
    :meth:`LoRANetwork.merge` to bake them in). Several LoRAs stack by loading each.

    Any convention of :mod:`ovi_core.lora_keys` is accepted. ``towers`` (``"video"``, ``"audio"``, ``"both"``;
    None = auto: the file's towers, and the video tower for Wan names). The network's ``report`` lists the
    matched and unmatched keys; unmatched ones are logged as a warning, a file that matches nothing is refused."""
    sd, meta, km = read_lora_for(model, path, towers=towers)
    if device is None:
        device = next(unwrap_model(model).parameters()).device
    net = network_from_state_dict(sd, metadata=meta, strength=strength, device=device, dtype=dtype, keymap=km)
    name = os.path.basename(str(path))
    logger.info("LoRA %s: %s", name, km.summary())
    if km.unmatched:
        logger.warning("LoRA %s: %d keys were not applied, e.g. %s", name, len(km.unmatched),
                       lora_keys._examples(km.unmatched))
    base = meta.get("ovi.lora.base_version")
    if base:
        logger.info("LoRA %s (rank %d, %d layers, trained on Ovi %s)", name, net.rank, len(net.names), base)
    return net.attach(model, strict=strict, weak=weak)


def apply_lora(model: nn.Module, config: LoRAConfig, *, seed: int | None = None,
               dtype: torch.dtype = torch.float32) -> LoRANetwork:
    """Create fresh trainable adapters for ``config`` and attach them (the model's output is unchanged
    until the adapters learn: ``lora_up`` starts at zero)."""
    return LoRANetwork.for_model(model, config, dtype=dtype, seed=seed).attach(model)


# ----------------------------------------------------------------------------------------------
# A model with LoRAs that are only active during its own calls (for graph UIs such as ComfyUI)
# ----------------------------------------------------------------------------------------------


@dataclass
class _Entry:
    network: LoRANetwork
    strength: float


class LoRAModel:
    """A view of a DiT with some LoRAs switched on for the duration of each call.

    The base model is shared (not copied, not changed): other users of the same base see no LoRA.
    Attribute reads and writes go to the base, so code that drives the DiT (samplers, block swap,
    ``.to()``) works unchanged. Wrapping a ``LoRAModel`` stacks its LoRAs.
    """

    _own = ("base", "_entries")

    def __init__(self, base: nn.Module, entries: Sequence[_Entry] = ()) -> None:
        object.__setattr__(self, "base", unwrap_model(base))
        chain = list(base._entries) if isinstance(base, LoRAModel) else []
        object.__setattr__(self, "_entries", chain + list(entries))

    def with_lora(self, network: LoRANetwork, *, strength: float = 1.0) -> LoRAModel:
        """A new view with one more LoRA (``network`` must be attached to the base, disabled)."""
        return LoRAModel(self, [_Entry(network, float(strength))])

    @property
    def loras(self) -> list[tuple[LoRANetwork, float]]:
        return [(e.network, e.strength) for e in self._entries]

    def __call__(self, *args, **kwargs):
        saved = [(e.network.enabled, e.network.strength) for e in self._entries]
        dev = next(self.base.parameters()).device
        try:
            for e in self._entries:
                if next(e.network.parameters()).device != dev:  # follow the base (offload, block swap)
                    e.network.to(dev)
                e.network.enabled, e.network.strength = True, e.strength
            return self.base(*args, **kwargs)
        finally:
            for e, (en, st) in zip(self._entries, saved, strict=True):
                e.network.enabled, e.network.strength = en, st

    forward = __call__

    def __getattr__(self, name: str):
        return getattr(object.__getattribute__(self, "base"), name)

    def __setattr__(self, name: str, value) -> None:
        if name in self._own:
            object.__setattr__(self, name, value)
        else:
            setattr(self.base, name, value)


def lora_model(model: nn.Module | LoRAModel, path: str | os.PathLike, *, strength: float = 1.0,
               towers: str | Iterable[str] | None = None) -> LoRAModel:
    """``model`` plus the LoRA file at ``path``, active only in calls through the returned view
    (``towers`` as in :func:`load_lora`)."""
    base = unwrap_model(model) if not isinstance(model, LoRAModel) else model.base
    net = load_lora(base, path, strength=strength, weak=True, towers=towers)
    net.enabled = False
    view = model if isinstance(model, LoRAModel) else LoRAModel(base)
    return view.with_lora(net, strength=strength)


@dataclass(frozen=True)
class LoRAInfo:
    """What a LoRA file says about itself."""

    path: str
    layers: int
    rank: int
    targets: tuple[str, ...]
    towers: tuple[str, ...]
    base_version: str | None
    metadata: dict[str, str] = field(default_factory=dict)
    conventions: tuple[str, ...] = ()
    unmatched: dict[str, str] = field(default_factory=dict)


def lora_info(path: str | os.PathLike, *, towers: str | Iterable[str] | None = None) -> LoRAInfo:
    """What a LoRA file holds (read from its keys; no model needed). ``targets``: the tower-relative
    layer names, e.g. ``blocks.N.self_attn.q`` without the block number (``self_attn.q``)."""
    sd, meta = read_lora(path)
    km = lora_keys.map_lora_keys({k: tuple(v.shape) for k, v in sd.items()}, towers=towers)
    rel = {re.sub(r"^(video_model|audio_model)\.(blocks\.\d+\.)?", "", n) for n in km.targets}
    rank = max((sd[s.down].shape[0] for s in km.linears.values() if s.down is not None), default=0)
    return LoRAInfo(path=os.fspath(path), layers=len(km.targets), rank=rank, targets=tuple(sorted(rel)),
                    towers=km.towers, base_version=meta.get("ovi.lora.base_version"), metadata=dict(meta),
                    conventions=km.conventions, unmatched=dict(km.unmatched))


def describe(network: LoRANetwork) -> str:
    return json.dumps({"layers": len(network.names), "rank": network.rank, "alpha": network.alpha,
                       "strength": network.strength, "merged": network.merged})
