"""Checks of user input that need no weights: run them before anything heavy (loading, encoding, sampling).

One module so that the CLI, :class:`ovi_core.pipeline.OviPipeline` and the ComfyUI nodes refuse the same
things with the same messages. Every check raises ``ValueError`` (or ``FileNotFoundError`` for a missing
file) saying what to do, and returns the normalised value where there is one.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

from ovi_core import sizes
from ovi_core.sampling.checks import (
    as_int,
    check_guidance,
    check_seed,
    check_shift,
    check_slg_layer,
    check_solver,
    check_steps,
)
from ovi_core.text.prompt import check_prompt_text

PROMPT_FILE_SUFFIXES = (".csv", ".tsv")


def check_size(width: int | None, height: int | None, *, area: int, draft: bool = False) -> tuple[int, int]:
    """The text->AV output size for a request: ``(height, width)`` rescaled to ``area``, sides multiples of 32.

    ``None`` sides default to a square. ``draft``: a size below ``area`` is kept (only snapped to multiples of 32,
    :func:`ovi_core.sizes.draft_hw`) instead of rescaled up. Refuses non-positive sides and requests whose snapped
    size exceeds the maximum side (extreme aspect ratios such as 1x100000).
    """
    side = int(area**0.5)
    w = side if width is None else as_int("width", width)
    h = side if height is None else as_int("height", height)
    if w <= 0 or h <= 0:
        raise ValueError(f"size must be positive, got {w}x{h} (width x height); e.g. 1280x704.")
    sh, sw = sizes.draft_hw(h, w, area=area) if draft else sizes.snap_hw_to_area(h, w, area=area)
    try:
        sizes.validate_size(sh, sw)
    except ValueError as e:
        raise ValueError(f"size {w}x{h} (width x height) gives {sw}x{sh} at the model's area of {area} pixels: "
                         f"{e}") from None
    return sh, sw


def draft_note(height: int, width: int, *, area: int) -> str | None:
    """The warning for a draft size below the trained ``area`` (None when it is not below)."""
    if not sizes.is_draft_size(height, width, area=area):
        return None
    side = int(round(area**0.5))
    return (f"draft size {width}x{height} is below the model's trained area ({side}x{side} pixels); quality there is "
            f"not what the model was trained for (use it for quick tries, not final clips).")


def clip_version(model_version: str, seconds: int | str | None) -> tuple[str, list[str]]:
    """The spec version that makes a clip of ``seconds`` with a model of ``model_version``, plus warnings.

    ``seconds`` None/"auto": what the model was trained for. 10 s with a 5 s Ovi 1.1 model works (the 10 s
    latent shapes) but warns; Ovi 1.0 makes 5 s only.
    """
    fam = "1.0" if str(model_version).startswith("1.0") else "1.1"
    if seconds is None or str(seconds) == "auto":
        return model_version, []
    s = str(seconds)
    if s == "10":
        if fam == "1.0":
            raise ValueError("Ovi 1.0 makes 5 s clips only; load model_960x960_10s.safetensors for 10 s.")
        if model_version != "1.1-10s":
            return "1.1-10s", ["10 s with a 5 s model; model_960x960_10s.safetensors is trained for 10 s."]
        return "1.1-10s", []
    if s == "5":
        if model_version == "1.1-10s":
            return "1.1", ["5 s with the 10 s model; model_960x960.safetensors is trained for 5 s."]
        return model_version, []
    raise ValueError(f"seconds must be auto, 5 or 10, got {seconds!r}.")


def check_generation(
    *,
    prompt: object,
    steps: object,
    shift: object,
    seed: object,
    slg_layer: object,
    solver: object = "unipc",
    video_guidance_scale: object = 4.0,
    audio_guidance_scale: object = 3.0,
    num_layers: int | None = None,
) -> None:
    """Every sampling argument at once (what :meth:`OviPipeline.generate`, the CLI and the sampler node take)."""
    check_prompt_text(prompt)
    check_steps(steps)
    check_shift(shift)
    check_seed(seed)
    check_slg_layer(slg_layer, num_layers=num_layers)
    check_solver(solver)
    check_guidance("video_guidance_scale", video_guidance_scale)
    check_guidance("audio_guidance_scale", audio_guidance_scale)


# ----------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------


def check_prompt_argument(arg: str) -> bool:
    """True when a ``--prompt`` argument names a prompt file (``.csv``/``.tsv``); such a file must exist.

    Without this, a mistyped file name would silently become the prompt text.
    """
    if not str(arg).strip().lower().endswith(PROMPT_FILE_SUFFIXES):
        return False
    if not os.path.isfile(arg):
        raise FileNotFoundError(f"Prompt file not found: {arg!r}. Fix the path, or pass the prompt text itself.")
    return True


def check_image_file(path: str) -> None:
    """``path`` exists and holds an image PyAV can decode (the header and the first frame are read)."""
    from ovi_core.io.files import regular_file
    from ovi_core.io.media import image_size

    regular_file(path, "Image")

    image_size(path)


def _existing_ancestor(folder: str) -> str:
    while not os.path.exists(folder):
        parent = os.path.dirname(folder)
        if parent == folder:
            break
        folder = parent
    return folder


def check_output_file(path: str, *, suffixes: Sequence[str] = (".mp4",)) -> str:
    """An output file path that can be written: not a folder, its folder creatable and writable.

    Returns the absolute path. Missing parent folders are fine (they are created when writing).
    """
    if not str(path).strip():
        raise ValueError("The output path is empty; pass e.g. --out clip.mp4.")
    p = os.path.abspath(os.fspath(path))
    if os.path.isdir(p):
        raise ValueError(f"The output {path!r} is a folder; give a file name such as {os.path.join(path, 'clip.mp4')!r}.")
    if suffixes and not p.lower().endswith(tuple(s.lower() for s in suffixes)):
        raise ValueError(f"The output {path!r} must end in {' or '.join(suffixes)}.")
    if len(os.path.basename(p).encode()) > 255:
        raise ValueError(f"The output file name {os.path.basename(p)!r} is too long (255 bytes at most).")
    if os.path.exists(p) and not os.access(p, os.W_OK):
        raise ValueError(f"The output {path!r} exists and is not writable; choose another name.")
    _check_folder_writable(os.path.dirname(p), what=f"the folder of {path!r}")
    return p


def check_output_folder(path: str) -> str:
    """An output folder that exists and is writable, or can be created. Returns the absolute path."""
    p = os.path.abspath(os.fspath(path))
    if os.path.exists(p) and not os.path.isdir(p):
        raise ValueError(f"The output folder {path!r} is a file; give a folder or a name ending in .mp4.")
    _check_folder_writable(p, what=f"the output folder {path!r}")
    return p


def _check_folder_writable(folder: str, *, what: str) -> None:
    base = _existing_ancestor(folder)
    if not os.path.isdir(base):
        raise ValueError(f"Cannot create {what}: {base!r} is a file, not a folder.")
    if not os.access(base, os.W_OK | os.X_OK):
        raise ValueError(f"Cannot write {what}: {base!r} is not writable; choose another output path.")


_DRIVE = re.compile(r"^[A-Za-z]:")


def check_filename_prefix(prefix: str, *, output_dir: str | None = None) -> None:
    """A ComfyUI ``filename_prefix``: a relative name that stays inside the output folder.

    Refuses absolute paths (``/x``, ``\\\\server\\x``), names starting with a drive letter (``C:x``), ``..``
    components and NUL characters; a ``:`` elsewhere is fine (``%date:yyyy-MM-dd%`` or an expanded time), except
    on Windows, where file names cannot hold one. With ``output_dir`` also resolves symbolic links, so a link inside
    the output folder that points elsewhere is refused too. Raises ``ValueError``; returns None.
    """
    if not isinstance(prefix, str):
        raise ValueError(f"filename_prefix must be a string, got {type(prefix).__name__}.")
    text = prefix.strip()
    hint = "; use a relative name such as 'Ovi/clip'"
    if "\x00" in text:
        raise ValueError(f"filename_prefix {prefix!r} contains a NUL character{hint}.")
    parts = text.replace("\\", "/").split("/")
    if os.path.isabs(text) or text.startswith(("/", "\\")):
        raise ValueError(f"filename_prefix {prefix!r} is an absolute path; it must stay inside the output "
                         f"folder{hint}.")
    if _DRIVE.match(text):
        raise ValueError(f"filename_prefix {prefix!r} starts with a drive letter; it must stay inside the output "
                         f"folder{hint}.")
    if os.name == "nt" and ":" in text:
        raise ValueError(f"filename_prefix {prefix!r} contains ':', which Windows file names cannot hold (a "
                         f"%date:...% token is expanded before this check){hint}.")
    if ".." in parts:
        raise ValueError(f"filename_prefix {prefix!r} contains '..'; it must stay inside the output folder{hint}.")
    if output_dir is not None:
        root = os.path.realpath(output_dir)
        target = os.path.realpath(os.path.join(root, *[p for p in parts if p]))
        if os.path.commonpath((root, target)) != root:
            raise ValueError(f"filename_prefix {prefix!r} leads outside the output folder {output_dir!r} "
                             f"(through a symbolic link){hint}.")
