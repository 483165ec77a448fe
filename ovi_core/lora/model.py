"""A model with LoRAs that are only active during its own calls (for graph UIs such as ComfyUI):
:class:`LoRAModel` and :func:`lora_model`; and what a LoRA file says about itself (:class:`LoRAInfo`,
:func:`lora_info`, :func:`describe`).

Re-exported by :mod:`ovi_core.lora`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from ovi_core.lora import keys as lora_keys
from ovi_core.lora.files import load_lora, read_lora
from ovi_core.lora.network import LoRANetwork
from ovi_core.lora.targets import ModelView, unwrap_model


@dataclass
class _Entry:
    network: LoRANetwork
    strength: float


class LoRAModel(ModelView):
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

    def offload(self, device: torch.device | str = "cpu") -> None:
        """Move the LoRA networks to ``device`` (e.g. when a run ends, so none stays on the GPU)."""
        for e in self._entries:
            e.network.to(device)

    def __call__(self, *args, **kwargs):
        saved = [(e.network.enabled, e.network.strength) for e in self._entries]
        # where the call computes: its first tensor (the latent); the base's weights may be partly offloaded
        first = next((a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)), None)
        dev = first.device if first is not None else next(self.base.parameters()).device
        try:
            for e in self._entries:
                if next(e.network.parameters()).device != dev:  # follow the compute device (offload, streaming)
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
