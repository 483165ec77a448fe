"""The place that talks to ComfyUI (``comfy``, ``folder_paths``, ``server``, ``comfy_api``); model loading and
unloading through ComfyUI's model management is ``_patcher``'s. Nothing here replaces or patches ComfyUI.

Every import is lazy and guarded: without ComfyUI (CI, notebooks) the functions fall back to plain
behaviour so the node classes can be exercised directly:

* model folders: ``$OVI_MODELS_DIR/<folder>`` (default ``./models/<folder>``);
* output / input folders: ``$OVI_OUTPUT_DIR`` / ``$OVI_INPUT_DIR`` (default ``./output``, ``./input``);
* progress bar, interrupt check, UI messages: no-ops;
* torch device: CUDA when available, else CPU.
"""

from __future__ import annotations

import html
import logging
import os
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


def operations():
    """ComfyUI's layer classes (``comfy.ops.manual_cast``) for Ovi's networks, so that a ``ModelPatcher`` can load
    them partially (stream the layers that do not fit); None without ComfyUI or in one that lacks a class Ovi
    builds on (then the networks use plain ``torch.nn`` and are only ever loaded whole)."""
    from ovi_core.runtime.ops import REQUIRED

    ops = getattr(_try_import("comfy.ops"), "manual_cast", None)
    if ops is None or not all(isinstance(getattr(ops, n, None), type) for n in REQUIRED):
        return None
    return ops


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
