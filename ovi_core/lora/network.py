"""The trainable / attachable LoRA network: :class:`LoRAAdapter` (one low-rank pair) and
:class:`LoRANetwork` (adapters and full deltas keyed by official module names, hooked into a DiT; strength,
merge/unmerge, its own state dict and safetensors file), plus :func:`parse_lora_state_dict` for that state dict.

Re-exported by :mod:`ovi_core.lora`; the file format is described there.
"""

from __future__ import annotations

import logging
import math
import os
import weakref
from collections.abc import Mapping

import torch
from torch import nn
from torch.nn import functional as F

from ovi_core.io.files import atomic_path
from ovi_core.lora import keys as lora_keys
from ovi_core.lora.deltas import LinearDelta, ParamPatch, param_key
from ovi_core.lora.targets import TOWERS, LoRAConfig, find_target_modules, unwrap_model

logger = logging.getLogger(__name__)

FORMAT_VERSION = "1"
_PREFIXES = ("base_model.model.", "diffusion_model.", "model.diffusion_model.", "model.")


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
