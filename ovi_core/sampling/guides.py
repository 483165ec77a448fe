"""Guides: hold parts of one stream at a given clean latent while the joint sampler generates the rest.

A :class:`Guide` names a stream (``"video"`` or ``"audio"``), a clean latent ``x0`` for the whole stream, a
boolean mask over that stream's latent positions and a mode:

- ``replace`` (default): before every step the masked positions are set to ``x0`` carried to the step's noise
  level with the flow-matching forward process, ``x = (1 - sigma) * x0 + sigma * eps``, so the model always
  sees one joint state at one shared timestep, as in training. ``sigma`` is the solver's own schedule value of
  the step; ``eps`` is the run's starting noise at those positions (one fixed draw per run, so a seed still
  means one clip). After the last step the masked positions equal ``x0`` exactly.
- ``clean``: the masked positions are held at ``x0`` before every step and in the result, and the model is
  told that their tokens are clean (timestep 0), the way image->AV treats latent frame 0. The per-token
  timestep masks come from :func:`clean_masks` and go to :func:`~ovi_core.sampling.joint.make_cfg_denoiser`.
- ``reference``: the masked positions are held at ``x0`` before every step and in the result, but their tokens
  keep the shared timestep (no clean mask): DreamID-Omni's face and voice reference tails, which sit on extra
  positions after the clip (:mod:`ovi_core.sampling.reference`).

``until`` (replace mode) enforces the guide only during the first ``until`` fraction of the steps and lets
the model move the positions freely afterwards (``1.0``: all steps and the result).

Where guides of one stream overlap, replace guides are applied first, in order, then clean and reference guides:
those win.
Shapes: video stream ``[B, 48, F, h, w]`` (latent), video masks ``[F]`` (whole latent frames) or ``[F, h, w]``;
audio stream ``[B, L, 20]``, audio masks ``[L]``. Guide latents are ``[1, ...]`` (or ``[B, ...]``) of the stream.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch

STREAMS = ("video", "audio")
MODES = ("replace", "clean", "reference")
VIDEO_PATCH = 2  # the DiT patchifies 2x2 latent pixels into one token


def check_mode(mode: str, until: float) -> None:
    """Raise ``ValueError`` unless ``mode`` is a guide mode and ``until`` a usable fraction for it."""
    if mode not in MODES:
        raise ValueError(f"guide mode must be 'replace', 'clean' or 'reference', got {mode!r}")
    try:
        u = float(until)
    except (TypeError, ValueError):
        raise ValueError(f"guide until must be a number in (0, 1], got {until!r}") from None
    if not 0.0 < u <= 1.0:
        raise ValueError(f"guide until must be in (0, 1] (fraction of the steps), got {until!r}")
    if mode != "replace" and u != 1.0:
        raise ValueError(f"guide until < 1 works only with mode 'replace': {mode} positions are held for the "
                         "whole run")


@dataclass(frozen=True)
class Guide:
    """A clean latent for one stream and the positions where it is enforced.

    Attributes:
        stream: ``"video"`` or ``"audio"``.
        latent: clean ``x0`` for the WHOLE stream: video ``[1, 48, F, h, w]``; audio ``[1, L, 20]`` (values at
            unmasked positions are ignored).
        mask: bool over latent positions, True = enforced: audio ``[L]``; video ``[F]`` or ``[F, h, w]``.
        mode: ``"replace"`` (forward-process noising at the shared timestep), ``"clean"`` (timestep 0, held) or
            ``"reference"`` (held, shared timestep).
        until: enforce during the first ``until`` fraction of the steps, in (0, 1]; below 1 only for replace.
    """

    stream: Literal["video", "audio"]
    latent: torch.Tensor
    mask: torch.Tensor
    mode: Literal["replace", "clean", "reference"] = "replace"
    until: float = 1.0

    def __post_init__(self) -> None:
        if self.stream not in STREAMS:
            raise ValueError(f"guide stream must be 'video' or 'audio', got {self.stream!r}")
        check_mode(self.mode, self.until)
        if not isinstance(self.latent, torch.Tensor) or not self.latent.is_floating_point():
            raise ValueError("guide latent must be a float tensor (an encoded clean latent)")
        if not isinstance(self.mask, torch.Tensor) or self.mask.dtype != torch.bool:
            got = self.mask.dtype if isinstance(self.mask, torch.Tensor) else type(self.mask).__name__
            raise ValueError(f"guide mask must be a bool tensor, got {got}")
        if self.stream == "video":
            if self.latent.ndim != 5:
                raise ValueError(f"video guide latent must be [1, 48, F, h, w], got {tuple(self.latent.shape)}")
            f, h, w = self.latent.shape[2:]
            if tuple(self.mask.shape) not in ((f,), (f, h, w)):
                raise ValueError(f"video guide mask must be [F] = [{f}] or [F, h, w] = [{f}, {h}, {w}] for a latent "
                                 f"{tuple(self.latent.shape)}, got {tuple(self.mask.shape)}")
        else:
            if self.latent.ndim != 3:
                raise ValueError(f"audio guide latent must be [1, L, 20], got {tuple(self.latent.shape)}")
            if tuple(self.mask.shape) != (self.latent.shape[1],):
                raise ValueError(f"audio guide mask must be [L] = [{self.latent.shape[1]}] for a latent "
                                 f"{tuple(self.latent.shape)}, got {tuple(self.mask.shape)}")

    def stream_mask(self) -> torch.Tensor:
        """The mask shaped to broadcast over the stream: video ``[1, 1, F, 1|h, 1|w]``, audio ``[1, L, 1]``."""
        if self.stream == "audio":
            return self.mask.view(1, -1, 1)
        if self.mask.ndim == 1:
            return self.mask.view(1, 1, -1, 1, 1)
        return self.mask.unsqueeze(0).unsqueeze(0)

    def enforced_steps(self, steps: int) -> int:
        """How many of ``steps`` steps (counted from the first) enforce this guide: ``ceil(until * steps)``."""
        if self.until >= 1.0:
            return steps
        return max(1, min(steps, math.ceil(float(self.until) * steps - 1e-9)))


def check_guides(guides: Sequence[Guide], *, video_shape: Sequence[int], audio_shape: Sequence[int]) -> tuple[Guide, ...]:
    """Validate guides against the run's latent shapes (``[B, 48, F, h, w]``, ``[B, L, 20]``); returns a tuple.

    Raises ``ValueError`` naming the guide and what to change when a latent does not match the stream.
    """
    out = tuple(guides)
    batch = video_shape[0]
    for n, g in enumerate(out):
        if not isinstance(g, Guide):
            raise ValueError(f"guide {n} is a {type(g).__name__}, expected ovi_core.sampling.guides.Guide")
        shape = video_shape if g.stream == "video" else audio_shape
        if tuple(g.latent.shape[1:]) != tuple(shape[1:]) or g.latent.shape[0] not in (1, batch):
            what = "[1, 48, F, h, w]" if g.stream == "video" else "[1, L, 20]"
            raise ValueError(
                f"guide {n} ({g.stream}) has a latent {tuple(g.latent.shape)} but the run's {g.stream} latent is "
                f"{tuple(shape)}; encode the guide at the clip's size and length ({what})"
            )
        if not bool(g.mask.any()):
            raise ValueError(f"guide {n} ({g.stream}) masks no position; give at least one True or drop the guide")
    return out


def _token_grid(mask: torch.Tensor) -> torch.Tensor:
    """Latent-pixel mask ``[F, h, w]`` -> token mask ``[F, h/2, w/2]``; each 2x2 patch must be uniform."""
    f, h, w = mask.shape
    if h % VIDEO_PATCH or w % VIDEO_PATCH:
        raise ValueError(f"video mask [F, h, w] = {list(mask.shape)}: h and w must be even (2x2 latent tokens)")
    blocks = mask.view(f, h // VIDEO_PATCH, VIDEO_PATCH, w // VIDEO_PATCH, VIDEO_PATCH)
    anyb, allb = blocks.any(dim=(2, 4)), blocks.all(dim=(2, 4))
    if not torch.equal(anyb, allb):
        raise ValueError("a clean video guide's spatial mask must cover whole 2x2 latent patches (the DiT's "
                         "tokens), i.e. 32x32-pixel blocks; align the mask or use mode 'replace'")
    return allb


def clean_masks(
    guides: Sequence[Guide], *, video_shape: Sequence[int], audio_shape: Sequence[int]
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Per-token clean masks for the model from the ``clean`` guides: ``(video_clean, audio_clean)``.

    video_clean: bool ``[1, F]`` when every clean video mask is per frame, else the token grid
    ``[1, F, h/2, w/2]``; audio_clean: bool ``[1, L]``. ``None`` for a stream without clean guides.
    """
    f, h, w = video_shape[2:]
    vid_frames: torch.Tensor | None = None
    vid_grid: torch.Tensor | None = None
    aud: torch.Tensor | None = None
    for g in guides:
        if g.mode != "clean":
            continue
        m = g.mask.to("cpu")
        if g.stream == "audio":
            aud = m if aud is None else aud | m
        elif m.ndim == 1:
            vid_frames = m if vid_frames is None else vid_frames | m
        else:
            t = _token_grid(m)
            vid_grid = t if vid_grid is None else vid_grid | t
    video = None
    if vid_grid is not None:
        video = vid_grid if vid_frames is None else vid_grid | vid_frames.view(f, 1, 1)
        video = video.unsqueeze(0)  # [1, F, h/2, w/2]
    elif vid_frames is not None:
        video = vid_frames.unsqueeze(0)  # [1, F]
    return video, (aud.unsqueeze(0) if aud is not None else None)


class GuideSchedule:
    """Applies guides inside the joint loop: :meth:`before_step` before each model call, :meth:`finish` after.

    Built once per run from the guides, the starting noise (``eps`` of the replace mode) and the solver's
    sigmas ``[steps + 1]``. With no guides both methods return their inputs unchanged.
    """

    def __init__(
        self,
        guides: Sequence[Guide],
        *,
        video_noise: torch.Tensor,
        audio_noise: torch.Tensor,
        sigmas: torch.Tensor,
        steps: int,
    ) -> None:
        guides = check_guides(guides, video_shape=video_noise.shape, audio_shape=audio_noise.shape)
        ordered = [g for g in guides if g.mode == "replace"] + [g for g in guides if g.mode != "replace"]
        self.steps = steps
        self._sigmas = list(sigmas.to(torch.float32).unbind(0))  # 0-d float32 CPU tensors, as the solvers
        self._items: list[tuple[str, str, torch.Tensor, torch.Tensor, int]] = []
        for g in ordered:
            ref = video_noise if g.stream == "video" else audio_noise
            x0 = g.latent.to(device=ref.device, dtype=torch.float32)
            mask = g.stream_mask().to(ref.device)
            self._items.append((g.stream, g.mode, mask, x0, g.enforced_steps(steps)))
        need_eps = any(mode == "replace" for _, mode, *_ in self._items)
        self._eps = {
            "video": video_noise.detach().to(torch.float32).clone() if need_eps else None,
            "audio": audio_noise.detach().to(torch.float32).clone() if need_eps else None,
        }

    def __bool__(self) -> bool:
        return bool(self._items)

    def _apply(self, stream: str, x: torch.Tensor, step: int | None) -> torch.Tensor:
        for s, mode, mask, x0, n in self._items:
            if s != stream or (step is not None and step >= n) or (step is None and n < self.steps):
                continue
            if mode != "replace" or step is None:
                value = x0
            else:
                sigma = self._sigmas[step]
                value = (1 - sigma) * x0 + sigma * self._eps[stream]
            x = torch.where(mask, value.to(x.dtype), x)
        return x

    def before_step(self, step: int, video: torch.Tensor, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Guided state for step ``step`` (0-based): video ``[B, 48, F, h, w]``, audio ``[B, L, 20]``."""
        if not self._items:
            return video, audio
        return self._apply("video", video, step), self._apply("audio", audio, step)

    def finish(self, video: torch.Tensor, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The result with every guide that was enforced on all steps set to ``x0`` at its positions."""
        if not self._items:
            return video, audio
        return self._apply("video", video, None), self._apply("audio", audio, None)
