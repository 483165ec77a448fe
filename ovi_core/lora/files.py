"""Reading LoRA files onto a model: :func:`read_lora` (tensors and metadata, refusing other model files),
:func:`network_from_state_dict` (any convention of :mod:`ovi_core.lora.keys`), :func:`check_lora_file` (from the
header alone), :func:`read_lora_for` / :func:`load_lora` (checked against the model, then attached), and
:func:`apply_lora` (fresh trainable adapters).

Re-exported by :mod:`ovi_core.lora`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping

import torch
from torch import nn

from ovi_core.io.files import regular_file
from ovi_core.lora import keys as lora_keys
from ovi_core.lora.network import LoRANetwork
from ovi_core.lora.targets import LoRAConfig, unwrap_model

logger = logging.getLogger(__name__)


def read_lora(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a LoRA file (safetensors, or a ``.pt`` read with ``weights_only``)."""
    from ovi_core.io import checkpoints as ck

    path = os.fspath(path)
    if os.path.isfile(path):  # refuse other models from the header, before reading any tensor
        _refuse_other_models(path)
    return ck.read_tensor_file(path, what="LoRA file")


def _refuse_other_models(path: str) -> dict:
    """The header of a LoRA file (``{name: TensorInfo}``); a file of another model (a VAE, the vocoder, the DiT
    itself) is refused naming what it looks like."""
    from ovi_core.io import checkpoints as ck
    from ovi_core.io.checkpoint_id import identify

    try:
        infos = ck.peek(path)
        ident = identify(infos, path=path)
    except ck.CheckpointError as e:
        raise ck.CheckpointError(f"LoRA file: {e}") from e
    if ident.component != "lora":
        raise ck.CheckpointError(f"Not a LoRA file: {path!r} looks like {ident.description}. Pick a LoRA file "
                                 "(from OviTrainLoRA or `python -m ovi_core train`) for the LoRA loader.")
    return infos


def network_from_state_dict(sd: Mapping[str, torch.Tensor], *, metadata: Mapping[str, str] | None = None,
                            strength: float = 1.0, device: torch.device | str | None = None,
                            dtype: torch.dtype = torch.float32, towers: str | Iterable[str] | None = None,
                            keymap: lora_keys.LoRAKeyMap | None = None) -> LoRANetwork:
    """A :class:`LoRANetwork` (not attached) from a LoRA state dict in any convention of
    :mod:`ovi_core.lora.keys`. ``towers``: where tower-less (Wan) names go (None: the video tower), and a
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

    regular_file(path, "LoRA file")
    infos = _refuse_other_models(os.fspath(path))
    try:
        km = lora_keys.map_lora_keys({k: tuple(v.shape) for k, v in infos.items()}, towers=towers)
    except ValueError as e:
        raise ValueError(f"{os.path.basename(os.fspath(path))}: {e}") from None
    check_lora_values(path)
    return km


MAX_ALPHA = 65536.0  # alpha is usually the rank (4-256) or 1; beyond this the file is damaged


def check_lora_values(path: str | os.PathLike) -> None:
    """Every tensor of a LoRA file is finite and every ``alpha`` a number in (0, MAX_ALPHA]: read once, tensor by
    tensor for safetensors (a LoRA is small next to the model), before any weights load. ``ValueError`` naming the
    file and the first bad tensor."""
    check_values(read_lora(path)[0], name=os.path.basename(os.fspath(path)))


def check_values(sd: Mapping[str, torch.Tensor], *, name: str) -> None:
    """The checks of :func:`check_lora_values` on tensors already read (``name``: the file, for the message)."""
    for key, t in sd.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name}: tensor {key!r} holds NaN or infinite values; the LoRA is damaged (or its "
                             "training diverged). Use an earlier checkpoint of it.")
        if key.endswith(".alpha") and t.numel() == 1:
            a = float(t.float().reshape(()))
            if not 0 < a <= MAX_ALPHA:
                raise ValueError(f"{name}: {key!r} is {a:g}; a LoRA alpha is a number above 0 and at most "
                                 f"{MAX_ALPHA:g} (usually the rank). The file is damaged.")


def read_lora_for(model: nn.Module, path: str | os.PathLike, *, towers: str | Iterable[str] | None = None
                  ) -> tuple[dict[str, torch.Tensor], dict[str, str], lora_keys.LoRAKeyMap]:
    """Read a LoRA file, map its keys onto ``model`` and check that they fit (``ValueError`` otherwise).
    Returns the tensors, the metadata and the key map (matched / unmatched keys)."""
    sd, meta = read_lora(path)
    check_values(sd, name=os.path.basename(os.fspath(path)))
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

    Any convention of :mod:`ovi_core.lora.keys` is accepted. ``towers`` (``"video"``, ``"audio"``, ``"both"``;
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
