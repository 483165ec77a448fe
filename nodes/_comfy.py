"""The one place that talks to ComfyUI (``comfy``, ``folder_paths``, ``server``, ``comfy_api``).

Every import is lazy and guarded: without ComfyUI (CI, notebooks) the functions fall back to plain
behaviour so the node classes can be exercised directly:

* model folders: ``$OVI_MODELS_DIR/<folder>`` (default ``./models/<folder>``);
* output / input folders: ``$OVI_OUTPUT_DIR`` / ``$OVI_INPUT_DIR`` (default ``./output``, ``./input``);
* progress bar, interrupt check, memory hooks, UI messages: no-ops;
* torch device: CUDA when available, else CPU.
"""

from __future__ import annotations

import html
import logging
import os
import threading
import weakref
from collections.abc import Callable

logger = logging.getLogger(__name__)

WEIGHT_EXTENSIONS = (".safetensors", ".sft", ".pth", ".pt", ".ckpt", ".bin")


def _try_import(name: str):
    try:
        return __import__(name, fromlist=["_"])
    except Exception:  # noqa: BLE001 (ComfyUI absent, or broken in a way we must not crash on)
        return None


def folder_paths():
    return _try_import("folder_paths")


def model_management():
    return _try_import("comfy.model_management")


def has_comfy() -> bool:
    return folder_paths() is not None


# ----------------------------------------------------------------------------------------------
# Folders
# ----------------------------------------------------------------------------------------------


def _fallback_models_dir() -> str:
    return os.path.abspath(os.environ.get("OVI_MODELS_DIR", os.path.join(os.getcwd(), "models")))


def model_dirs(folder: str) -> list[str]:
    """All folders ComfyUI searches for ``folder`` (e.g. "diffusion_models"); downloads go to ``download_dir``."""
    fp = folder_paths()
    if fp is not None:
        try:
            return list(fp.get_folder_paths(folder))
        except Exception:  # noqa: BLE001 (unknown folder name in an older ComfyUI)
            return []
    return [os.path.join(_fallback_models_dir(), folder)]


def download_dir(folder: str) -> str | None:
    """Where an auto-download into ``folder`` goes: the ComfyUI path named like the folder itself
    (``models/diffusion_models``, as README says, not the legacy ``models/unet`` that ComfyUI lists first),
    else the first configured path; None when ComfyUI has no such folder."""
    dirs = model_dirs(folder)
    for d in dirs:
        if os.path.basename(os.path.normpath(d)) == folder:
            return d
    return dirs[0] if dirs else None


def list_models(folder: str) -> list[str]:
    """Weight files in ``folder``, relative to it (sub-folders use '/'), sorted."""
    fp = folder_paths()
    if fp is not None:
        try:
            return sorted(f for f in fp.get_filename_list(folder) if f.lower().endswith(WEIGHT_EXTENSIONS))
        except Exception:  # noqa: BLE001
            return []
    out: list[str] = []
    for root in model_dirs(folder):
        if not os.path.isdir(root):
            continue
        for dirpath, _, files in os.walk(root, followlinks=True):
            for f in files:
                if f.lower().endswith(WEIGHT_EXTENSIONS):
                    out.append(os.path.relpath(os.path.join(dirpath, f), root).replace(os.sep, "/"))
    return sorted(set(out))


def model_path(folder: str, name: str) -> str | None:
    """Full path of ``name`` (as listed by :func:`list_models`) in ``folder``, or None when absent."""
    fp = folder_paths()
    if fp is not None:
        try:
            p = fp.get_full_path(folder, name)
        except Exception:  # noqa: BLE001
            p = None
        if p:
            return p
    for root in model_dirs(folder):
        p = os.path.join(root, name)
        if os.path.isfile(p):
            return p
    return None


def output_dir() -> str:
    fp = folder_paths()
    if fp is not None:
        return fp.get_output_directory()
    return os.path.abspath(os.environ.get("OVI_OUTPUT_DIR", os.path.join(os.getcwd(), "output")))


def input_dir() -> str:
    fp = folder_paths()
    if fp is not None:
        return fp.get_input_directory()
    return os.path.abspath(os.environ.get("OVI_INPUT_DIR", os.path.join(os.getcwd(), "input")))


def save_path(prefix: str, root: str) -> tuple[str, str, int]:
    """``(folder, filename_base, counter)`` for a new output file, ComfyUI's ``get_save_image_path`` rules.

    Refuses absolute prefixes, any '..' and symbolic links leading out, so nothing is written outside
    ``root`` (``ovi_core.validate.check_filename_prefix``, the same check as at queue time).
    """
    from ovi_core.validate import check_filename_prefix

    prefix = (prefix or "").strip() or "Ovi"
    check_filename_prefix(prefix, output_dir=root)
    fp = folder_paths()
    if fp is not None:
        folder, base, counter, _sub, _ = fp.get_save_image_path(prefix, root)
        return folder, base, counter
    sub, base = os.path.split(os.path.normpath(prefix))
    folder = os.path.join(root, sub)
    if os.path.commonpath((os.path.abspath(root), os.path.abspath(folder))) != os.path.abspath(root):
        raise ValueError(f"filename_prefix {prefix!r} points outside the output folder.")
    os.makedirs(folder, exist_ok=True)
    counter = 1
    for f in os.listdir(folder):
        if f.startswith(base + "_"):
            head = f[len(base) + 1:].split("_")[0].split(".")[0]
            if head.isdigit():
                counter = max(counter, int(head) + 1)
    return folder, base, counter


# ----------------------------------------------------------------------------------------------
# Device, progress, interrupt, UI text
# ----------------------------------------------------------------------------------------------


def torch_device():
    import torch

    mm = model_management()
    if mm is not None:
        try:
            return mm.get_torch_device()
        except Exception:  # noqa: BLE001
            pass
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def progress_bar(total: int, node_id: str | None = None) -> Callable[[int, int], None]:
    """A ``callback(done, total)`` driving ComfyUI's progress bar (a no-op without ComfyUI)."""
    utils = _try_import("comfy.utils")
    if utils is None or not hasattr(utils, "ProgressBar"):
        return lambda done, total: None
    try:
        bar = utils.ProgressBar(total, node_id=node_id)
    except TypeError:
        bar = utils.ProgressBar(total)

    def update(done: int, total: int) -> None:
        bar.update_absolute(done, total)

    return update


def check_interrupt() -> None:
    """Raise ComfyUI's interrupt exception when the user pressed Cancel (no-op without ComfyUI)."""
    mm = model_management()
    if mm is not None:
        mm.throw_exception_if_processing_interrupted()


def ui_text(text: str) -> str:
    """``text`` as the node's text preview must receive it: the frontend inserts it with ``innerHTML``
    (newlines become line breaks), so ``<S>``/``<E>`` and any other markup are escaped to show literally."""
    return html.escape(text, quote=False)


def show_text(node_id: str | None, text: str, *, level: int = logging.WARNING) -> None:
    """Show ``text`` on the node in the browser (literally: HTML is escaped), replacing what it showed
    before; logged always (at ``level``). Several lines: join them with newlines into one call."""
    logger.log(level, "%s", text)
    if node_id is None:
        return
    server = _try_import("server")
    inst = getattr(getattr(server, "PromptServer", None), "instance", None) if server else None
    if inst is not None and hasattr(inst, "send_progress_text"):
        try:
            inst.send_progress_text(ui_text(text), node_id)
        except Exception:  # noqa: BLE001 (UI messages are best effort)
            pass


def metadata_disabled() -> bool:
    """True when ComfyUI runs with ``--disable-metadata`` (then no prompt/workflow goes into saved files)."""
    cli = _try_import("comfy.cli_args")
    return bool(getattr(getattr(cli, "args", None), "disable_metadata", False))


def workflow_metadata(prompt, extra_pnginfo) -> dict[str, str]:
    """Container tags as core ``SaveVideo`` writes them: ``prompt`` and each ``extra_pnginfo`` entry
    (``workflow``) as JSON text, so dropping the file onto ComfyUI restores the graph. Empty when ComfyUI
    runs with ``--disable-metadata`` or when there is nothing to embed."""
    import json

    if metadata_disabled():
        return {}
    meta: dict[str, str] = {}
    if isinstance(extra_pnginfo, dict):
        for k, v in extra_pnginfo.items():
            meta[str(k)] = json.dumps(v)
    if prompt is not None:
        meta["prompt"] = json.dumps(prompt)
    return meta


def video_output(path: str):
    """A VIDEO value for native nodes (``VideoFromFile``), or the path string on ComfyUI versions without it."""
    for mod in ("comfy_api.latest", "comfy_api.input_impl"):
        m = _try_import(mod)
        if m is None:
            continue
        cls = getattr(getattr(m, "InputImpl", m), "VideoFromFile", None) or getattr(m, "VideoFromFile", None)
        if cls is not None:
            return cls(path)
    return path


# ----------------------------------------------------------------------------------------------
# Memory management
# ----------------------------------------------------------------------------------------------

_lock = threading.RLock()
_modules: list[weakref.ref] = []
_hook_installed = False
_inside_own_request = threading.local()


def register_module(module) -> None:
    """Track a loaded Ovi module so ComfyUI's "unload models" / "free memory" moves it to CPU."""
    with _lock:
        _modules[:] = [r for r in _modules if r() is not None]
        _modules.append(weakref.ref(module))
    install_memory_hook()


def tracked_modules() -> list:
    with _lock:
        return [m for m in (r() for r in _modules) if m is not None]


def offload_all(*, keep: tuple = ()) -> int:
    """Move every tracked module (except ``keep``) that sits on a GPU to CPU; return how many moved."""
    import torch

    moved = 0
    for m in tracked_modules():
        if any(m is k for k in keep):
            continue
        try:
            p = next(m.parameters(), None)
        except Exception:  # noqa: BLE001
            continue
        if p is not None and p.device.type != "cpu":
            hook = getattr(m, "block_hook", None)
            if hook is not None and hasattr(hook, "detach"):
                hook.detach()
            m.to("cpu")
            moved += 1
    if moved and torch.cuda.is_available():
        torch.cuda.empty_cache()
    return moved


def install_memory_hook() -> bool:
    """Wrap ``comfy.model_management.free_memory`` (which ``unload_all_models``, the /free endpoint and every
    model load go through) so that a request ComfyUI cannot satisfy from its own models also offloads ours."""
    global _hook_installed
    mm = model_management()
    if mm is None or _hook_installed:
        return _hook_installed
    original = mm.free_memory
    if getattr(original, "_ovi_wrapped", False):
        _hook_installed = True
        return True

    def free_memory(memory_required, device, keep_loaded=[]):  # noqa: B006 (ComfyUI's signature)
        result = original(memory_required, device, keep_loaded)
        if getattr(_inside_own_request, "active", False):
            return result
        try:
            if memory_required >= 1e20 or mm.get_free_memory(device) < memory_required:
                n = offload_all()
                if n:
                    logger.info("Ovi: moved %d model(s) to CPU to free %s", n, device)
        except Exception as e:  # noqa: BLE001 (never break ComfyUI's own memory management)
            logger.debug("Ovi memory hook: %s", e)
        return result

    free_memory._ovi_wrapped = True  # type: ignore[attr-defined]
    mm.free_memory = free_memory
    _hook_installed = True
    return True


def make_room(num_bytes: int, device) -> None:
    """Ask ComfyUI to unload its own models until ``num_bytes`` (plus a margin) fit on ``device``."""
    mm = model_management()
    if mm is None or getattr(device, "type", str(device)) == "cpu":
        return
    _inside_own_request.active = True
    try:
        mm.free_memory(int(num_bytes * 1.1) + (512 << 20), device)
    except Exception as e:  # noqa: BLE001
        logger.debug("Ovi: free_memory request failed: %s", e)
    finally:
        _inside_own_request.active = False
