"""Checks of user input that need no weights: run them before anything heavy (loading, encoding, sampling).

One module so that the CLI, :class:`ovi_core.pipeline.OviPipeline` and the ComfyUI nodes refuse the same
things with the same messages. Every check raises ``ValueError`` (or ``FileNotFoundError`` for a missing
file) saying what to do, and returns the normalised value where there is one.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

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
    _check_sampling(steps=steps, shift=shift, seed=seed, slg_layer=slg_layer, solver=solver,
                    video_guidance_scale=video_guidance_scale, audio_guidance_scale=audio_guidance_scale,
                    num_layers=num_layers)


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


# ----------------------------------------------------------------------------------------------
# The one entry point: everything a run reads or writes that can be checked without the weights
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoraRequest:
    """A LoRA a run will apply: its file, strength and towers; ``what`` names it in messages (a flag or a node)."""

    path: str
    strength: float = 1.0
    towers: str = "auto"
    what: str = "--lora"


@dataclass(frozen=True)
class GuideRequest:
    """A guide a run will use, read and placed now (cheap: no VAE). One of ``path`` (a media file: ``--audio``,
    ``--video``), ``waveform`` + ``rate`` (a ComfyUI AUDIO), ``frames`` + ``fps`` (a ComfyUI IMAGE batch) or
    ``source`` + ``redo`` (``--source CLIP --redo audio:2-3``)."""

    stream: str  # "audio", "video" or "redo"
    version: str
    area: int = 0
    path: str | None = None
    waveform: object = None  # torch.Tensor [T] / [C, T] / [1, C, T]
    rate: int = 0
    frames: object = None  # torch.Tensor [N, H, W, 3]
    fps: float = 0.0
    source: str | None = None
    redo: str | None = None
    offset: float = 0.0
    mode: str = "replace"
    until: float = 1.0
    trim: bool = False


@dataclass(frozen=True)
class Plan:
    """What a run (CLI command or node) will read and write. Every field is optional; :func:`check_plan` checks
    the ones given, cheapest first (values, then file kinds, then headers and small files), and reads nothing of
    the model's weights beyond file headers."""

    prompts: Sequence[str] = ()
    sampling: Mapping[str, object] | None = None  # check_generation's keywords other than ``prompt``
    size: tuple[int, int] | None = None  # (width, height) asked for, with ``area`` and ``draft``
    area: int = 0
    draft: bool = False
    blocks_on_gpu: int | None = None  # resident fused blocks with block_swap: 0 or more
    outputs: Sequence[tuple[str, tuple[str, ...]]] = ()  # (file to write, the suffixes it may have)
    output_folder: str | None = None
    windows_dir: str | None = None
    images: Sequence[str] = ()  # first frames: decoded now (uint8, at most 4x ``area`` pixels)
    guides: Sequence[GuideRequest] = ()
    latents: str | None = None  # saved latents read now (decode, OviLoadLatents)
    loras: Sequence[LoraRequest] = ()
    fusion: Sequence[str] = ()  # fusion files to load: headers, GGUF block scales
    fusion_what: str = "--fusion file"  # how messages name them
    fusion_values: bool = True  # scan GGUF block scales now (False: the loader checks each tensor as it reads it)
    model_files: Sequence[str] = ()  # the fusion files the LoRAs must fit (headers only); default ``fusion``
    model_shapes: Mapping[str, tuple[int, ...]] | None = None  # instead of ``model_files``


@dataclass
class Checked:
    """What :func:`check_plan` read, so nothing is read twice: ``size`` (h, w) when asked, ``images`` {path: uint8
    [H, W, 3]}, ``guides`` (one list of inputs per request), ``latents`` (:class:`~ovi_core.io.latents.AVLatents`),
    ``lora_maps`` (key maps, in order), ``fusion`` (one path or a pair, as the loaders take it)."""

    size: tuple[int, int] | None = None
    images: dict = field(default_factory=dict)
    guides: list = field(default_factory=list)
    latents: object = None
    lora_maps: list = field(default_factory=list)
    fusion: str | list[str] | None = None


def check_plan(plan: Plan) -> Checked:
    """Check everything of ``plan`` that needs no weights, before any weights load; return what was read.

    The CLI commands (generate, long clips, guides, ``--source/--redo``, decode, quantize) and the nodes (loaders,
    LoRA, guides, samplers, latents) call this one function, so they refuse the same inputs with the same messages.
    Raises ``ValueError`` / ``FileNotFoundError`` naming the file or flag and what to do.
    """
    import math

    from ovi_core.io.files import regular_file

    out = Checked()
    # 1. values
    for text in plan.prompts:
        check_prompt_text(text)
    if plan.sampling is not None:
        _check_sampling(**plan.sampling)
    if plan.size is not None:
        out.size = check_size(*plan.size, area=plan.area, draft=plan.draft)
    if plan.blocks_on_gpu is not None and as_int("blocks_on_gpu", plan.blocks_on_gpu) < 0:
        raise ValueError(f"--blocks-on-gpu must be 0 or more fused blocks kept on the GPU, got {plan.blocks_on_gpu}.")
    for lora in plan.loras:
        try:
            strength = float(lora.strength)
        except (TypeError, ValueError):
            strength = float("nan")
        if not math.isfinite(strength):
            raise ValueError(f"{lora.what} {os.path.basename(lora.path)}: the strength must be a finite number "
                             f"(e.g. 0.8), got {lora.strength!r}.")
    # 2. places to write
    if plan.output_folder is not None:
        check_output_folder(plan.output_folder)
    for path, suffixes in plan.outputs:
        check_output_file(path, suffixes=suffixes)
    if plan.windows_dir is not None:
        check_windows_dir(plan.windows_dir)
    # 3. files named: each a readable regular file before any is opened
    named = [(p, "Image") for p in plan.images] + [(g.path or g.source, f"--{g.stream if g.path else 'source'} file")
                                                    for g in plan.guides if g.path or g.source]
    named += [(plan.latents, "Latents file")] if plan.latents else []
    named += [(lo.path, f"{lo.what} file") for lo in plan.loras] + [(f, plan.fusion_what) for f in plan.fusion]
    for path, what in named:
        regular_file(path, what)
    # 4. headers and small files
    if plan.fusion:
        out.fusion = _check_fusion_files(list(plan.fusion), values=plan.fusion_values)
    if plan.loras:
        shapes = plan.model_shapes if plan.model_shapes is not None else fusion_shapes(plan.model_files or plan.fusion)
        out.lora_maps = [_check_lora(lo, shapes) for lo in plan.loras]
    if plan.latents:
        from ovi_core.io.latents import load_latents

        out.latents = load_latents(plan.latents)
    for path in plan.images:
        from ovi_core.io.media import read_image

        out.images[path] = read_image(path, max_pixels=4 * plan.area if plan.area else None)
    out.guides = [_read_guide(g) for g in plan.guides]
    return out


def _check_sampling(*, steps, shift, seed, slg_layer, solver="unipc", video_guidance_scale=4.0,
                    audio_guidance_scale=3.0, num_layers=None) -> None:
    check_steps(steps)
    check_shift(shift)
    check_seed(seed)
    check_slg_layer(slg_layer, num_layers=num_layers)
    check_solver(solver)
    check_guidance("video_guidance_scale", video_guidance_scale)
    check_guidance("audio_guidance_scale", audio_guidance_scale)


def check_windows_dir(path: str) -> str:
    """``--windows-dir``: an existing writable folder, or one that can be created. Returns the absolute path."""
    p = os.path.abspath(os.fspath(path))
    if os.path.exists(p) and not os.path.isdir(p):
        raise ValueError(f"--windows-dir {path!r} is a file; give a folder (it is created when missing)")
    base = _existing_ancestor(p)
    if not os.path.isdir(base):
        raise ValueError(f"--windows-dir {path!r} cannot be created: {base!r} is a file, not a folder")
    if not os.access(base, os.W_OK | os.X_OK):
        raise ValueError(f"--windows-dir {path!r} is not writable ({base!r}); give a folder you can write to")
    return p


def _check_fusion_files(files: list[str], *, values: bool = True) -> str | list[str]:
    """One fusion file or a tower pair, each an Ovi fusion model or tower by its header; GGUF headers (caps on
    tensors, keys and header size) and, with ``values``, GGUF block scales and fp8 ``scale_weight`` values (NaN, Inf,
    0), before the weights load."""
    if len(files) > 2:
        raise ValueError(f"--fusion takes one fusion file or a video + audio tower pair, got {len(files)} files.")
    from ovi_core.quant.gguf_file import check_gguf_values, read_gguf_index
    from ovi_core.quant.sources import is_gguf, open_source, read_scales

    for f in files:
        if is_gguf(f):
            if values:
                check_gguf_values(f)
            else:
                read_gguf_index(f)
        src = open_source(f)  # an Ovi fusion model or tower, from the header (else: what the file looks like)
        if values:
            read_scales(src, whole_file=False)  # fp8_scaled: a scale of 0, NaN or Inf, before the weights load
    return files[0] if len(files) == 1 else files


def fusion_shapes(files: Sequence[str]) -> dict[str, tuple[int, ...]]:
    """``{official name: shape}`` of fusion files from their headers only (no weights read); empty when a file
    cannot be read as an Ovi fusion file here (the loader then names the problem)."""
    from ovi_core.quant.sources import open_source

    shapes: dict[str, tuple[int, ...]] = {}
    for f in files:
        if not os.path.isfile(f):
            return {}
        try:
            src = open_source(f)
        except (OSError, ValueError):
            return {}
        shapes.update({k: tuple(int(d) for d in v.shape) for k, v in src.infos.items()})
    return shapes


def _check_lora(lora: LoraRequest, model_shapes: Mapping[str, tuple[int, ...]]):
    """Key map of a LoRA file (headers), its values (NaN/Inf tensors, absurd alphas) and its fit to the model."""
    from ovi_core.io import checkpoints as ck
    from ovi_core.lora import keys as lora_keys
    from ovi_core.lora.files import check_lora_file

    km = check_lora_file(lora.path, towers=lora.towers)
    if model_shapes:
        shapes = {k: tuple(v.shape) for k, v in ck.peek(lora.path).items()}
        dim = next((s[1] for k, s in model_shapes.items() if k.endswith("self_attn.q.weight") and len(s) == 2), None)
        try:
            lora_keys.check_fit(km, shapes, model_shapes)
        except ValueError as e:
            raise ValueError(f"{lora.what} {os.path.basename(lora.path)} does not fit this fusion model"
                             f"{f' (width {dim})' if dim else ''}: {e} Use a LoRA made for this model "
                             "(Ovi, or Wan2.2-TI2V-5B for the video tower).") from None
    return km


def _read_guide(g: GuideRequest) -> list:
    """The guide inputs of one request (:mod:`ovi_core.conditioning`), read, checked and placed."""
    from ovi_core import sizes
    from ovi_core.conditioning.audio_in import prepare_audio, read_audio_file
    from ovi_core.conditioning.video_in import prepare_video, read_video_file

    if g.stream == "redo":
        from ovi_core.conditioning.redo import redo_inputs

        if g.until != 1.0:
            raise ValueError("--guide-until applies to --audio/--video; a redo keeps the rest of the clip exactly")
        return redo_inputs(g.source, g.redo, version=g.version, area=g.area, mode=g.mode)
    if g.stream == "video":
        if g.path is not None:
            frames, fps = read_video_file(g.path, seconds=sizes.get_spec(g.version).frames / 24 if g.trim else None)
        else:
            frames, fps = g.frames, g.fps
        return [prepare_video(frames, fps, version=g.version, area=g.area, mode=g.mode, until=g.until, trim=g.trim)]
    if g.stream == "audio":
        wav, rate = read_audio_file(g.path) if g.path is not None else (g.waveform, g.rate)
        return [prepare_audio(wav, rate, version=g.version, offset=g.offset, mode=g.mode, until=g.until,
                              trim=g.trim)]
    raise ValueError(f"a guide is audio, video or redo, got {g.stream!r}")
