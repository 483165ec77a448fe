"""Helpers shared by the nodes: file choices (with auto-download) and where modules run.

No tensor maths here: only choosing files and compute dtypes (placement is ``_patcher``'s job).
"""

from __future__ import annotations

import logging
import os

from . import _comfy

logger = logging.getLogger(__name__)

AUTO = "auto-download: "

# choice label -> (ComfyUI folder, official file name, weights.py key)
FUSION_AUTO = {
    "model_960x960.safetensors": "1.1",
    "model_960x960_10s.safetensors": "1.1-10s",
    "model.safetensors": "1.0",
    "model_fp8_e4m3fn.safetensors": "1.0-fp8",
}
TEXT_AUTO = {"models_t5_umt5-xxl-enc-bf16.pth": "umt5"}
VAE_AUTO = {"Wan2.2_VAE.pth": "wan-vae"}
AUDIO_VAE_AUTO = {"v1-16.pth": "mmaudio-vae"}
VOCODER_AUTO = {"best_netG.pt": "bigvgan"}
TOKENIZER_DIR = "google/umt5-xxl"


def choices(folder: str, auto: dict[str, str], *, first: tuple[str, ...] = ()) -> list[str]:
    """Files of a ComfyUI model folder plus one "auto-download: <official name>" entry per official file."""
    files = _comfy.list_models(folder)
    return list(first) + files + [AUTO + name for name in auto]


def default_choice(options: list[str], preferred: str) -> str:
    """``preferred`` if that file is present, else its auto-download entry."""
    for o in options:
        if o == preferred or o.endswith("/" + preferred):
            return o
    return AUTO + preferred if AUTO + preferred in options else options[0]


def _weight_file(key: str):
    from ovi_core.io.weights import COMPONENT_FILES, FUSION_FILES

    return FUSION_FILES[key] if key in FUSION_FILES else COMPONENT_FILES[key]


def _download(folder: str, key: str) -> str:
    """Fetch an official file into ComfyUI's ``models/<folder>`` (see ``_comfy.download_dir``); return its path."""
    wf = _weight_file(key)
    target = _comfy.download_dir(folder)
    if target is None:
        raise FileNotFoundError(f"ComfyUI has no '{folder}' models folder configured.")
    os.makedirs(target, exist_ok=True)
    name = os.path.basename(wf.filename.rstrip("/"))
    dest = os.path.join(target, name)
    if wf.filename.endswith("/"):
        dest = os.path.join(target, wf.filename.rstrip("/"))
        if os.path.isdir(dest) and os.listdir(dest):
            return dest
    elif os.path.isfile(dest):
        return dest
    from ovi_core.io.weights import download_file

    return download_file(wf, target, flatten=True)


def resolve(folder: str, choice: str, auto: dict[str, str]) -> str:
    """Path of a file choice; an auto-download choice uses the local file if present, else downloads it."""
    if choice.startswith(AUTO):
        name = choice[len(AUTO):]
        if name not in auto:
            raise ValueError(f"Unknown auto-download choice {choice!r}.")
        local = _comfy.model_path(folder, name)
        return local or _download(folder, auto[name])
    path = _comfy.model_path(folder, choice)
    if path is None:
        raise FileNotFoundError(f"{choice!r} is not in ComfyUI's '{folder}' folder ({', '.join(_comfy.model_dirs(folder))})."
                                " Put the file there and press 'Refresh', or pick an auto-download entry.")
    return path


def find_tokenizer(choice: str, encoder_path: str) -> str | None:
    """Tokenizer folder for the text encoder; None lets the loader use the one embedded in the file."""
    if choice not in ("auto", "", None):
        for root in _comfy.model_dirs("text_encoders"):
            p = os.path.join(root, choice)
            if os.path.isdir(p):
                return p
        if os.path.isdir(choice):
            return choice
        raise FileNotFoundError(f"Tokenizer folder {choice!r} not found in text_encoders.")
    candidates = [os.path.join(os.path.dirname(encoder_path), TOKENIZER_DIR)]
    candidates += [os.path.join(root, TOKENIZER_DIR) for root in _comfy.model_dirs("text_encoders")]
    for c in candidates:
        if os.path.isdir(c) and os.listdir(c):
            return c
    return None


def tokenizer_choices() -> list[str]:
    out = ["auto"]
    for root in _comfy.model_dirs("text_encoders"):
        if not os.path.isdir(root):
            continue
        for dirpath, _, files in os.walk(root, followlinks=True):
            if "spiece.model" in files or "tokenizer.json" in files:
                rel = os.path.relpath(dirpath, root).replace(os.sep, "/")
                if rel not in out:
                    out.append(rel)
    return out


def ensure_tokenizer(encoder_path: str) -> str | None:
    """The official .pth carries no tokenizer: fetch ``google/umt5-xxl`` next to it when missing and allowed."""
    found = find_tokenizer("auto", encoder_path)
    if found is not None or not encoder_path.endswith((".pth", ".pt")):
        return found
    try:
        return _download("text_encoders", "tokenizer")
    except FileNotFoundError as e:
        raise FileNotFoundError(f"No UMT5 tokenizer for {encoder_path}: {e}") from e


# ----------------------------------------------------------------------------------------------
# Precision
# ----------------------------------------------------------------------------------------------


def compute_dtype(precision: str, device):
    """Compute dtype of a precision choice (fp8 keeps fp8 weights but computes in bf16)."""
    import torch

    from ovi_core.runtime.devices import pick_dtype

    if precision == "fp8":
        return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    if precision == "auto":
        return pick_dtype(None, torch.device(device))
    return pick_dtype(precision, torch.device(device))
