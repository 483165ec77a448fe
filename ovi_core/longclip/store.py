"""Saved windows, for resuming an interrupted long clip.

Each finished window's latents go to ``<folder>/window_000.safetensors`` (atomically, with a key of the job's
settings in the metadata). A later run with the same folder and the same settings loads them instead of
sampling again (the sampler is deterministic for a seed, so the result is the same clip); a window saved by
a run with other settings is ignored with a warning.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os

from ovi_core.io.files import atomic_path
from ovi_core.io.latents import AVLatents

logger = logging.getLogger(__name__)


def job_key(settings: dict) -> str:
    """A short digest of everything that determines the windows (prompts, seed, steps, plan, size, ...)."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def tensor_digest(t) -> str | None:
    """A short digest of a tensor's values (dtype, shape and bytes), for :func:`job_key`; None for None."""
    if t is None:
        return None
    import torch

    x = t.detach().cpu().contiguous()
    h = hashlib.sha256(f"{x.dtype}{tuple(x.shape)}".encode())
    h.update(x.view(torch.uint8).numpy().tobytes() if x.numel() else b"")
    return h.hexdigest()[:16]


def file_identity(path: str | os.PathLike) -> tuple[str, int, int]:
    """``(absolute path, size, mtime in ns)`` of a file: a file changed in place gets another identity."""
    st = os.stat(path)
    return os.path.abspath(os.fspath(path)), st.st_size, st.st_mtime_ns


class WindowStore:
    """``load(k)`` / ``save(k, latents)`` of the windows of one job in ``folder``."""

    def __init__(self, folder: str | os.PathLike, *, key: str) -> None:
        self.folder = os.fspath(folder)
        self.key = key
        os.makedirs(self.folder, exist_ok=True)

    def path(self, index: int) -> str:
        return os.path.join(self.folder, f"window_{index:03d}.safetensors")

    def load(self, index: int) -> AVLatents | None:
        from safetensors import safe_open

        p = self.path(index)
        if not os.path.isfile(p):
            return None
        try:
            with safe_open(p, framework="pt") as f:
                meta = f.metadata() or {}
                if meta.get("ovi.longclip_key") != self.key:
                    logger.warning("%s was saved by a run with other settings; sampling window %d again", p, index)
                    return None
                video, audio = f.get_tensor("video"), f.get_tensor("audio")
        except Exception as e:  # noqa: BLE001 (a broken file is sampled again, not a crash)
            logger.warning("cannot read %s (%s); sampling window %d again", p, e, index)
            return None
        return AVLatents(video=video, audio=audio, version=meta.get("ovi.version", "1.0"))

    def save(self, index: int, lat: AVLatents) -> str:
        from safetensors.torch import save_file

        p = self.path(index)
        with atomic_path(p, suffix=".safetensors") as tmp:
            save_file({"video": lat.video.contiguous(), "audio": lat.audio.contiguous()}, tmp,
                      metadata={"ovi.longclip_key": self.key, "ovi.version": lat.version, "ovi.window": str(index)})
        return p

    def clear(self) -> None:
        """Delete the saved windows of this folder (after a complete run)."""
        for name in os.listdir(self.folder):
            if name.startswith("window_") and name.endswith(".safetensors"):
                os.remove(os.path.join(self.folder, name))


def stored(windows, store: WindowStore | None):
    """Pass ``windows`` (an iterator of latents) through, saving each one to ``store``."""
    for k, lat in enumerate(windows):
        if store is not None:
            store.save(k, lat)
        yield lat
