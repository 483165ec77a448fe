"""Paired latents on disk (``*.ovi_latents.safetensors``), and keeping a finished run when its output fails.

Format (the one ComfyUI's OviSaveLatents writes): tensors ``video`` ``[B, 48, F, h, w]`` and ``audio``
``[B, L, 20]`` in float32, metadata ``ovi.version`` and ``ovi.fps``. Decode such a file with
``python -m ovi_core decode FILE --weights DIR --out clip.mp4``.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass, field

import torch

from ovi_core import sizes
from ovi_core.io.files import atomic_path

logger = logging.getLogger(__name__)

LATENT_SUFFIX = ".ovi_latents.safetensors"
VIDEO_LATENT_CHANNELS = 48
AUDIO_LATENT_CHANNELS = 20


@dataclass
class AVLatents:
    """Paired latents of one or more clips. video ``[B, 48, F, H/16, W/16]``, audio ``[B, L, 20]``."""

    video: torch.Tensor
    audio: torch.Tensor
    version: str = "1.0"
    fps: int = sizes.FPS
    stats: dict = field(default_factory=dict)  # sampling counts: forwards, CFG reuse, step cache

    @property
    def height(self) -> int:
        return self.video.shape[-2] * 16

    @property
    def width(self) -> int:
        return self.video.shape[-1] * 16


class OutputWriteError(OSError):
    """Writing a finished result failed; the latents were kept in :attr:`latents_path` (None if even that failed)."""

    def __init__(self, message: str, *, path: str, latents_path: str | None) -> None:
        super().__init__(message)
        self.path = path
        self.latents_path = latents_path


def save_latents(path: str | os.PathLike, latents) -> str:
    """Write :class:`AVLatents` to ``path`` atomically; returns the path."""
    from safetensors.torch import save_file

    path = os.fspath(path)
    meta = {"ovi.version": str(latents.version), "ovi.fps": str(latents.fps), "format": "pt"}
    tensors = {"video": latents.video.detach().float().cpu().contiguous(),
               "audio": latents.audio.detach().float().cpu().contiguous()}
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file(tensors, tmp, metadata=meta)
    return path


def load_latents(path: str | os.PathLike):
    """Read a latents file (ours, or OviSaveLatents') into :class:`AVLatents`; every problem
    (missing, damaged, foreign file, wrong shapes, bad metadata) is an error that names the file and what is wrong."""
    from ovi_core.io import checkpoints as ck

    path = os.fspath(path)
    tensors, meta = ck.read_tensor_file(path, what="Ovi latents file", required=("video", "audio"))
    video, audio = tensors["video"], tensors["audio"]
    if video.dim() != 5 or video.shape[1] != VIDEO_LATENT_CHANNELS:
        raise ValueError(f"{path!r}: video latent has shape {tuple(video.shape)}, expected [B, 48, F, h, w].")
    if audio.dim() != 3 or audio.shape[-1] != AUDIO_LATENT_CHANNELS:
        raise ValueError(f"{path!r}: audio latent has shape {tuple(audio.shape)}, expected [B, L, 20].")
    for name, t in (("video", video), ("audio", audio)):
        if not t.is_floating_point():
            raise ValueError(f"{path!r}: the {name} latent is {str(t.dtype).replace('torch.', '')}, not floating "
                             "point; latents are float32/bfloat16 tensors. Give the file that generate wrote.")
        if t.shape[0] != 1:
            raise ValueError(f"{path!r}: the {name} latent holds a batch of {t.shape[0]} clips; one clip per file "
                             "is decoded. Save each clip on its own.")
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{path!r}: the {name} latent holds NaN or infinite values; the file is damaged "
                             "(or the run that wrote it diverged). Decoding it would give a black or noisy clip.")
    fps = ck.meta_int(meta, "ovi.fps", path=path, low=1, high=240, example="24")
    version = ck.meta_choice(meta, "ovi.version", path=path, choices=sizes.MODEL_SPECS)
    return AVLatents(video=video.float(), audio=audio.float(), version=version or "1.0", fps=fps or sizes.FPS)


def keep_latents(latents, intended_path: str | os.PathLike) -> str | None:
    """Save ``latents`` beside ``intended_path`` (``<path>.ovi_latents.safetensors``), else in the temp folder.

    Used when writing a result failed; returns where they went, or None when neither place was writable.
    """
    intended = os.fspath(intended_path)
    stem = os.path.splitext(os.path.basename(intended))[0] or "ovi"
    candidates = [os.path.splitext(os.path.abspath(intended))[0] + LATENT_SUFFIX]
    candidates.append(os.path.join(tempfile.gettempdir(), stem[:150] + f"_{os.getpid()}" + LATENT_SUFFIX))
    for cand in candidates:
        try:
            return save_latents(cand, latents)
        except Exception as e:  # noqa: BLE001 (any failure: try the next place)
            logger.debug("could not keep the latents in %s: %s", cand, e)
    return None


def decode_command(latents_path: str, out: str, *, weights: str | None = None) -> str:
    """The command line that decodes a kept latents file to ``out``."""
    import shlex

    w = shlex.quote(weights) if weights else "WEIGHTS_DIR"
    return f"python -m ovi_core decode {shlex.quote(latents_path)} --weights {w} --out {shlex.quote(out)}"


def write_failed(error: BaseException, latents, path: str, *, weights: str | None = None) -> OutputWriteError:
    """Keep the latents of a run whose output ``path`` could not be written; the error to raise says how to
    decode them."""
    kept = keep_latents(latents, path)
    what = f"{type(error).__name__}: {error}"
    if kept is None:
        return OutputWriteError(f"Could not write {path!r} ({what}), and the latents could not be saved either.",
                                path=path, latents_path=None)
    msg = (f"Could not write {path!r} ({what}). The generated latents are kept in {kept!r}; decode them with: "
           f"{decode_command(kept, path, weights=weights)}")
    logger.error("%s", msg)
    return OutputWriteError(msg, path=path, latents_path=kept)

