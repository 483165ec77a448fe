"""Saving: MP4 (H.264 + AAC) with a preview, and latent files for decoding later."""

from __future__ import annotations

import os
from fractions import Fraction

from . import _comfy
from ._types import OVI_LATENTS

LATENT_SUFFIX = ".ovi_latents.safetensors"


def _validate_prefix(prefix) -> bool | str:
    """Queue-time check of ``filename_prefix`` (ComfyUI's VALIDATE_INPUTS): True, or the reason it is refused.

    A linked prefix has no value yet at queue time (None): it is checked again when the file is written.
    """
    if prefix is None:
        return True
    from ovi_core.validate import check_filename_prefix

    try:
        check_filename_prefix(_expand(prefix), output_dir=_comfy.output_dir())
    except ValueError as e:
        return str(e)
    return True


def _expand(prefix, *, width: int = 0, height: int = 0, prompt=None) -> str:
    """``prefix`` with core's save-node substitutions (``%date:yyyy-MM-dd%``, ``%width%``, ``%Node.widget%``...):
    ComfyUI's frontend expands them for its own save nodes only, so this node does it."""
    from ovi_core.io.prefix import expand_prefix

    if not isinstance(prefix, str):
        return prefix
    return expand_prefix(prefix, width=width, height=height, prompt=prompt)


_PREFIX_TIP = ("File name prefix inside ComfyUI's output folder; may contain sub-folders ('Ovi/clip') and core's "
               "tokens: %date:yyyy-MM-dd%, %width%, %height%, %year%, %month%, %day%, %hour%, %minute%, %second%, "
               "%NodeTitle.widget%. No absolute path or '..'. A counter is appended.")


class OviSaveVideo:
    """IMAGE frames + AUDIO -> MP4 in ComfyUI's output folder, previewed on the node; also a VIDEO output."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "Frames [F, H, W, 3] in [0, 1] (from OviDecodeVideo)."}),
                "fps": ("FLOAT", {"default": 24.0, "min": 1.0, "max": 120.0, "step": 1.0,
                                  "tooltip": "Frame rate; Ovi generates 24 fps."}),
                "filename_prefix": ("STRING", {
                    "default": "Ovi/ovi", "tooltip": _PREFIX_TIP}),
            },
            "optional": {
                "audio": ("AUDIO", {"tooltip": "Sound track (from OviDecodeAudio); muxed as AAC. Leave empty "
                                               "for a silent video."}),
            },
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }

    @classmethod
    def VALIDATE_INPUTS(cls, filename_prefix=None):
        return _validate_prefix(filename_prefix)

    RETURN_TYPES = ("VIDEO", "STRING")
    RETURN_NAMES = ("video", "path")
    OUTPUT_TOOLTIPS = ("The saved clip as a VIDEO, for core video nodes.", "Path of the written MP4 file.")
    FUNCTION = "save"
    OUTPUT_NODE = True
    SEARCH_ALIASES = ["save mp4", "video combine", "save video with audio", "export mp4"]
    CATEGORY = "Ovi/output"
    DESCRIPTION = "Writes an MP4 (H.264 + AAC) and shows it; the VIDEO output feeds native video nodes."

    def save(self, images, fps, filename_prefix, audio=None, prompt=None, extra_pnginfo=None):
        from ovi_core.io.media import write_mp4

        if images.dim() == 3:
            images = images.unsqueeze(0)
        if images.dim() != 4 or images.shape[-1] not in (3, 4):
            raise ValueError(f"images must be [F, H, W, 3], got {tuple(images.shape)}.")
        frames = images[..., :3]
        waveform, rate = None, 16000
        if audio is not None:
            waveform = audio["waveform"]
            rate = int(audio["sample_rate"])
            if waveform.dim() == 3:
                waveform = waveform[0]  # [C, T]
        root = _comfy.output_dir()
        prefix = _expand(filename_prefix, width=frames.shape[2], height=frames.shape[1], prompt=prompt)
        folder, base, counter = _comfy.save_path(prefix, root)
        os.makedirs(folder, exist_ok=True)
        name = f"{base}_{counter:05}_.mp4"
        path = os.path.join(folder, name)
        fps = float(fps)
        rate_q = int(fps) if fps.is_integer() else Fraction(fps).limit_denominator(1001)  # PyAV wants a rational
        # the graph goes into the file as core SaveVideo puts it, so dropping the MP4 onto ComfyUI restores it
        write_mp4(path, frames, waveform, fps=rate_q, sample_rate=rate,
                  metadata=_comfy.workflow_metadata(prompt, extra_pnginfo) or None)
        subfolder = os.path.relpath(folder, root)
        subfolder = "" if subfolder == "." else subfolder.replace(os.sep, "/")
        ui = {"images": [{"filename": name, "subfolder": subfolder, "type": "output"}], "animated": (True,)}
        return {"ui": ui, "result": (_comfy.video_output(path), path)}


class OviSaveLatents:
    """Save paired latents to ``output/<prefix>_NNNNN_.ovi_latents.safetensors`` to decode them later."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "latents": (OVI_LATENTS, {"tooltip": "Paired latents from OviJointSampler."}),
                "filename_prefix": ("STRING", {
                    "default": "Ovi/latents", "tooltip": _PREFIX_TIP}),
            },
            "hidden": {"prompt": "PROMPT"},
        }

    @classmethod
    def VALIDATE_INPUTS(cls, filename_prefix=None):
        return _validate_prefix(filename_prefix)

    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("path",)
    OUTPUT_TOOLTIPS = ("Path of the written latents file.",)
    FUNCTION = "save"
    OUTPUT_NODE = True
    SEARCH_ALIASES = ["save latent", "cache latents"]
    CATEGORY = "Ovi/latents"
    DESCRIPTION = "Saves video + audio latents (safetensors with the model version) for OviLoadLatents."

    def save(self, latents, filename_prefix, prompt=None):
        from safetensors.torch import save_file

        root = _comfy.output_dir()
        prefix = _expand(filename_prefix, width=latents.width, height=latents.height, prompt=prompt)
        folder, base, counter = _comfy.save_path(prefix, root)
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, f"{base}_{counter:05}_{LATENT_SUFFIX}")
        meta = {"ovi.version": str(latents.version), "ovi.fps": str(latents.fps), "format": "pt"}
        save_file({"video": latents.video.detach().float().cpu().contiguous(),
                   "audio": latents.audio.detach().float().cpu().contiguous()}, path, metadata=meta)
        rel = os.path.relpath(path, root).replace(os.sep, "/")
        return {"ui": {"text": [rel]}, "result": (path,)}


def _latent_files() -> list[str]:
    out = []
    for tag, root in (("output", _comfy.output_dir()), ("input", _comfy.input_dir())):
        if not os.path.isdir(root):
            continue
        for dirpath, _, files in os.walk(root):
            for f in files:
                if f.endswith(LATENT_SUFFIX):
                    out.append(os.path.relpath(os.path.join(dirpath, f), root).replace(os.sep, "/") + f" [{tag}]")
    return sorted(out) or ["(no saved latents yet)"]


def _latent_path(choice: str) -> str:
    for tag, root in (("output", _comfy.output_dir()), ("input", _comfy.input_dir())):
        suffix = f" [{tag}]"
        if choice.endswith(suffix):
            rel = choice[: -len(suffix)]
            path = os.path.abspath(os.path.join(root, rel))
            if os.path.commonpath((os.path.abspath(root), path)) != os.path.abspath(root):
                raise ValueError(f"{choice!r} points outside the {tag} folder.")
            return path
    raise FileNotFoundError(f"{choice!r} is not a saved latents file; save some with OviSaveLatents first.")


class OviLoadLatents:
    """Load latents written by OviSaveLatents (from the output or input folder)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "latents_file": (_latent_files(), {
                    "tooltip": f"A *{LATENT_SUFFIX} file from ComfyUI's output (or input) folder."}),
            }
        }

    RETURN_TYPES = (OVI_LATENTS,)
    RETURN_NAMES = ("latents",)
    OUTPUT_TOOLTIPS = ("The loaded paired latents; to OviDecodeVideo / OviDecodeAudio or OviRedoGuide.",)
    FUNCTION = "load"
    SEARCH_ALIASES = ["load latent", "decode later"]
    CATEGORY = "Ovi/latents"
    DESCRIPTION = "Loads saved paired latents so a long run can be decoded later."

    @classmethod
    def IS_CHANGED(cls, latents_file):
        try:
            return os.path.getmtime(_latent_path(latents_file))
        except (OSError, ValueError):
            return float("nan")

    def load(self, latents_file):
        from ovi_core import validate

        return (validate.check_plan(validate.Plan(latents=_latent_path(latents_file))).latents,)
