"""Ovi's components under ComfyUI's own model management (the only module that loads or unloads them).

Each heavy component (fusion DiT, UMT5, Wan2.2 VAE, MMAudio VAE + BigVGAN) is held by a
``comfy.model_patcher.ModelPatcher`` with ComfyUI's load and offload devices, and is made ready for use through
``comfy.model_management.load_models_gpu([patcher], memory_required=...)``. ComfyUI then decides what stays on the
GPU, unloads other models (or ours) when something needs the room, and ``/free`` releases ours like its own.
Nothing of ComfyUI is replaced or patched: the pack only calls its public functions.

* The fusion DiT is built on ``comfy.ops.manual_cast`` (``ovi_core``'s ``operations`` argument, see
  :mod:`ovi_core.runtime.ops`), so in ``auto`` mode ComfyUI may load it *partially*: ``load_models_gpu`` gets the
  activation estimate (:mod:`ovi_core.runtime.estimate`) as ``memory_required``, keeps what fits on the GPU and
  leaves the other layers on the offload device, each cast to the GPU when it runs (its ``lowvram`` mode; it also
  honours ``--lowvram``, ``--novram``, ``--highvram`` and ``--reserve-vram``). The ``gpu`` and ``offload`` modes
  load it whole; ``block_swap`` streams whole blocks with Ovi's own prefetch.
* Modules on plain ``torch.nn`` (the VAEs) cannot be streamed by layer: every load is a full load
  (``force_full_load=True``). Under ``--novram`` (where ComfyUI would load nothing) such a component is moved to
  the GPU for its use only, after ``free_memory`` made room, and moved back afterwards.
* Caches that belong to a run (RoPE tables, text keys/values) are dropped when the run ends and when ComfyUI
  unloads the model (an ``on_detach`` callback); LoRA networks go to the offload device when the run ends.
* When a held module is garbage-collected (``/free`` with ``free_memory`` drops ComfyUI's node cache), glibc is
  asked to return freed heap pages (``malloc_trim``), so the server's RSS comes back down.

Without ComfyUI (CI, notebooks) there is no patcher and the old placement applies: moved to the device for the
block and back to CPU afterwards unless the memory mode is ``gpu``.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import sys
import weakref
from collections.abc import Iterator

import torch

from . import _comfy

logger = logging.getLogger(__name__)

DETACH_KEY = "ovi_clear_caches"
_OFFLOAD_DEVICE = {"dit": "unet_offload_device", "text": "text_encoder_offload_device",
                   "vae": "vae_offload_device", "audio": "vae_offload_device"}


class Holder(torch.nn.Module):
    """What a patcher holds: the Ovi module as its only child. ModelPatcher writes its bookkeeping (``device``,
    ``model_loaded_weight_memory``, ...) onto the object it holds; some Ovi classes have a read-only ``device``."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner


# one class per role, so ComfyUI's log ("Requested to load OviFusionDiT") names what it loads
HOLDERS = {role: type(name, (Holder,), {}) for role, name in (
    ("dit", "OviFusionDiT"), ("text", "OviUMT5"), ("vae", "OviWanVAE"), ("audio", "OviAudioCodec"))}


def _patcher_module():
    return _comfy._try_import("comfy.model_patcher")


def _vram_state(mm) -> str:
    state = getattr(mm, "vram_state", None)
    return getattr(state, "name", "NORMAL_VRAM")


def clear_caches(module) -> None:
    """Drop the run caches of a fusion DiT (its text k/v and every RoPE table); other modules have none."""
    from ovi_core.lora.targets import unwrap_model

    fn = getattr(unwrap_model(module), "clear_caches", None) if module is not None else None
    if callable(fn):
        fn()


def _on_detach(patcher, *args) -> None:
    """ComfyUI unloaded (or garbage-collected) a patcher: drop the DiT's caches. Never raises into ComfyUI."""
    try:
        clear_caches(getattr(patcher.model, "inner", None))
    except Exception as e:  # noqa: BLE001 (e.g. at interpreter exit, when ModelPatcher.__del__ detaches)
        logger.debug("Ovi: clearing caches on unload failed: %s", e)


def trim_heap() -> None:
    """Hand freed heap pages back to the OS. glibc keeps the pages of freed small and medium allocations (a
    loaded model's many tensors and its Python objects) in its arenas, so without this the server's RSS stays
    up after ``/free`` dropped the model. Linux (glibc) only; never raises."""
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # musl or another libc: nothing to trim
        pass


def manage(module, device: torch.device, role: str):
    """A ``ModelPatcher`` holding ``module`` for compute on ``device`` (None without ComfyUI). ``role`` ("dit",
    "text", "vae", "audio") picks ComfyUI's offload device for it."""
    mm, mp = _comfy.model_management(), _patcher_module()
    if mm is None or mp is None:
        return None
    from ovi_core.lora.targets import unwrap_model

    device = torch.device(device)
    if device.type == "cpu":
        offload = device
    else:
        offload = getattr(mm, _OFFLOAD_DEVICE[role])()
    patcher = mp.ModelPatcher(HOLDERS[role](unwrap_model(module)), load_device=device, offload_device=offload)
    weakref.finalize(unwrap_model(module), trim_heap)  # when ComfyUI's cache lets the module go (/free)
    ext = _comfy._try_import("comfy.patcher_extension")
    if ext is not None and hasattr(patcher, "add_callback_with_key"):
        patcher.add_callback_with_key(ext.CallbacksMP.ON_DETACH, DETACH_KEY, _on_detach)
    return patcher


def build_device(device, memory_mode: str) -> torch.device:
    """Where a loader builds a module: CPU (ComfyUI loads it onto the GPU when it is used), except without
    ComfyUI in ``gpu`` mode, where it is built on the GPU and stays there."""
    device = torch.device(device)
    if device.type == "cpu" or (memory_mode == "gpu" and _comfy.model_management() is None):
        return device
    return torch.device("cpu")


def hold(p, role: str):
    """``p`` (a ``Placed``) with a patcher for its module; in ``gpu`` mode loaded at once."""
    p.patcher = manage(p.module, p.device, role)
    if p.memory_mode == "gpu":
        load(p)
    return p


def _free(mm, num_bytes: int, device: torch.device) -> None:
    """Ask ComfyUI to unload models until ``num_bytes`` plus its reserve are free on ``device``."""
    if mm is None or device.type == "cpu":
        return
    mm.free_memory(int(num_bytes) + int(mm.extra_reserved_memory()), device)


def _is_loaded(patcher, device: torch.device) -> bool:
    return patcher.loaded_size() > 0 and torch.device(patcher.current_loaded_device()) == device


def streams(p) -> bool:
    """True when ComfyUI may load ``p``'s module partially: built on ``comfy.ops`` and in ``auto`` mode."""
    from ovi_core.runtime.ops import uses_streaming_ops

    return p.memory_mode == "auto" and uses_streaming_ops(p.module)


def load(p, memory_required: int = 0) -> bool:
    """Load ``p``'s module for use through ComfyUI (whole, or partially where :func:`streams`); False where
    ComfyUI cannot hold it (no patcher, or ``--novram`` for a module it cannot stream)."""
    mm = _comfy.model_management()
    partial = streams(p)
    if p.patcher is None or mm is None or (_vram_state(mm) == "NO_VRAM" and not partial):
        return False
    mm.load_models_gpu([p.patcher], memory_required=int(memory_required), force_full_load=not partial)
    return True


@contextlib.contextmanager
def use(p, *, memory_required: int = 0) -> Iterator[object]:
    """``p.module`` ready on ``p.device`` for the block (loaded by ComfyUI where it can be)."""
    from ovi_core.runtime.memory import on_device, parameter_bytes

    if load(p, memory_required):
        yield p.module
        return
    mm = _comfy.model_management()
    _free(mm, parameter_bytes(p.module) + memory_required, p.device)
    with on_device(p.module, p.device, offload=p.offload or p.patcher is not None) as m:
        yield m


@contextlib.contextmanager
def use_all(*ps) -> Iterator[tuple]:
    """Several components ready together (one ``load_models_gpu`` call, so loading one cannot unload another)."""
    mm = _comfy.model_management()
    if mm is not None and ps and all(p.patcher is not None for p in ps) and _vram_state(mm) != "NO_VRAM":
        mm.load_models_gpu([p.patcher for p in ps], force_full_load=not all(streams(p) for p in ps))
        yield tuple(p.module for p in ps)
        return
    with contextlib.ExitStack() as stack:
        yield tuple(stack.enter_context(use(p)) for p in ps)


def plan(p, mm, *, rows: int = 2, extra_tokens: int = 0) -> tuple[str, int, int]:
    """``(mode, blocks_on_gpu, activation bytes)`` for a sampling run of the DiT handle ``p`` (an ``OviModel``):
    ``rows`` rows per forward (2: batched CFG; 4: reference mode's four passes) of the model's tokens plus
    ``extra_tokens`` (reference tails)."""
    from ovi_core.runtime.estimate import activation_bytes, dit_tokens_for_area, plan_dit
    from ovi_core.runtime.memory import dit_layout

    tokens = dit_tokens_for_area(p.target_area, version=p.version) + int(extra_tokens)
    act = activation_bytes(tokens, rows=rows)
    mode = p.memory_mode
    if p.device.type == "cpu" or mm is None:
        return ("offload" if mode == "auto" else mode), p.blocks_on_gpu, act
    state = _vram_state(mm)
    if mode == "auto" and state in ("HIGH_VRAM", "SHARED"):
        return "gpu", p.blocks_on_gpu, act
    if mode != "auto":
        if mode != "block_swap" and state == "NO_VRAM":
            return "block_swap", 0, act
        return mode, p.blocks_on_gpu, act
    weights, block, n = dit_layout(p.module)
    _free(mm, weights + act, p.device)  # ComfyUI unloads what it must (its models, our other components)
    d = plan_dit(int(mm.get_free_memory(p.device)), weight_bytes=weights, block_bytes=block, num_blocks=n,
                 tokens=tokens, rows=rows, allow_full=state not in ("LOW_VRAM", "NO_VRAM"))
    if not d.fits:
        logger.warning("Ovi: the DiT needs about %.1f GiB even with no resident block; it may run out of memory.",
                       d.need_bytes / 2**30)
    return d.mode, (0 if state == "NO_VRAM" else d.blocks_on_gpu), act


@contextlib.contextmanager
def use_model(p, *, rows: int = 2, extra_tokens: int = 0) -> Iterator[object]:
    """The fusion DiT ready for a sampling run: loaded whole through ComfyUI, or with its blocks streamed
    (``block_swap``), per :func:`plan` (``rows``, ``extra_tokens``: as there). The run's caches are dropped
    afterwards."""
    from ovi_core.runtime.memory import dit_layout, dit_on_device

    mm = _comfy.model_management()
    if p.patcher is not None and mm is not None and p.device.type != "cpu" and streams(p):
        mode, blocks, act = "gpu", 0, plan(p, None, rows=rows, extra_tokens=extra_tokens)[2]  # ComfyUI streams the rest
    elif p.patcher is not None and mm is not None and _is_loaded(p.patcher, p.device):
        mode, blocks, act = "gpu", 0, plan(p, None, rows=rows, extra_tokens=extra_tokens)[2]  # held whole: no streaming
    else:
        mode, blocks, act = plan(p, mm, rows=rows, extra_tokens=extra_tokens)
    try:
        if mode in ("gpu", "offload") and load(p, act):
            yield p.module
            return
        if mode == "block_swap" and p.device.type != "cpu":
            weights, block, n = dit_layout(p.module)
            _free(mm, weights - (n - min(blocks + 2, n)) * block + act, p.device)
            logger.info("Ovi: streaming the DiT's blocks, %d of %d resident", blocks, n)
        else:
            from ovi_core.runtime.memory import parameter_bytes

            _free(mm, parameter_bytes(p.module) + act, p.device)
        gpu = mode == "gpu" and p.patcher is None
        with dit_on_device(p.module, p.device, memory_mode="gpu" if gpu else mode if mode == "block_swap"
                           else "offload", blocks_on_gpu=blocks) as m:
            yield m
    finally:
        clear_caches(p.module)
        release_loras(p)


def release_loras(p) -> None:
    """Move the LoRA networks of ``p``'s module (an ``ovi_core.lora.LoRAModel`` view) to the offload device:
    they follow the compute device during a run and must not stay on the GPU after it."""
    offload = getattr(p.module, "offload", None)
    if callable(offload) and hasattr(p.module, "loras"):
        offload(getattr(p.patcher, "offload_device", None) or torch.device("cpu"))

