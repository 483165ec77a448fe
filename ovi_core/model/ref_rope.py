"""RoPE for reference tails (DreamID-Omni "Syn-RoPE"): position offsets for face and voice reference tokens.

DreamID-Omni (``Guoxu1233/DreamID-Omni`` ``modules/model.py`` ``rope_apply_3d`` / ``rope_apply_1d``) appends the
references after the clip's latents and moves their rotary positions far from the clip's:

* video: the temporal position of reference frame ``j`` (the ``j``-th of the trailing reference latent frames) is
  ``150 * (j + 1)``; the clip's frames keep ``0..F-1``; height/width positions are unchanged;
* audio: the tokens of voice ``j`` get ``offset * (j + 1) + [0..len_j)`` with ``offset = int(150 / s)``, ``s`` the
  audio RoPE scaling the engine passes (``31 / 157`` as a bfloat16 tensor = 0.197265625, so ``offset`` = 760 and
  ``offset * s`` is about 150 and 300: voice ``j`` lines up with face ``j``). The clip's audio rotates with the same
  ``s`` (not the tower's ``temporal_rope_scaling_factor`` 0.19676).

The same tables are used in the self-attention and in both fusion cross-attentions (the official code passes the
same ``ref_lengths`` / ``freqs_scaling`` to every ``rope_apply`` of a tower).

Precision, as the official code computes it (bit for bit in bfloat16): the video temporal angles are float32
(``rope_params_with_offset``), cos/sin taken in float32, then multiplied in float64 with the float64 height/width
table; the audio angles and the whole audio rotation are float32 (complex64). This differs from plain Ovi's
float64 tables by float32 rounding, even for the clip's own tokens, so a reference run uses these tables for all
tokens.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ovi_core.model.rope import THETA, _normal_tensors, axis_pairs

VIDEO_OFFSET = 150
# DreamID-Omni's engine: freqs_scaling = torch.tensor(video_latent_length / audio_latent_length, dtype=bf16)
TRAINED_LATENTS = (31, 157)


def audio_scale_and_offset(dtype: torch.dtype = torch.bfloat16) -> tuple[float, int]:
    """``(s, int(150 / s))`` as the official engine computes them with ``s`` a 0-d tensor of ``dtype``:
    bfloat16 (the released runs) gives ``(0.197265625, 760)``; float32 gives ``(0.19745..., 759)``."""
    s = torch.tensor(TRAINED_LATENTS[0] / TRAINED_LATENTS[1], dtype=dtype)
    return float(s), int(VIDEO_OFFSET / s)


@dataclass(frozen=True)
class RefLayout:
    """Where the reference tails sit in the two streams and how they are rotated.

    Attributes:
        video_frames: number of trailing latent frames that are face references (one frame per face).
        audio_lengths: trailing audio latents per voice reference, in order (``()``: none).
        audio_scale: the audio RoPE scaling ``s`` (see :func:`audio_scale_and_offset`).
        audio_offset: the audio position offset base ``int(150 / s)``.
    """

    video_frames: int
    audio_lengths: tuple[int, ...]
    audio_scale: float
    audio_offset: int

    @classmethod
    def dreamid(cls, video_frames: int, audio_lengths: Sequence[int]) -> RefLayout:
        """The layout DreamID-Omni's released (bfloat16) engine uses: ``s`` = bf16(31/157), offset 760."""
        s, off = audio_scale_and_offset(torch.bfloat16)
        return cls(int(video_frames), tuple(int(n) for n in audio_lengths), s, off)

    @property
    def audio_total(self) -> int:
        return sum(self.audio_lengths)

    def check(self, video_frames: int, audio_length: int) -> None:
        """Raise ``ValueError`` unless the streams (``F`` latent frames, ``L`` audio latents) hold the tails."""
        if self.video_frames < 0 or any(n <= 0 for n in self.audio_lengths):
            raise ValueError(f"reference layout must have >= 0 face frames and positive voice lengths, got {self}")
        if video_frames <= self.video_frames:
            raise ValueError(f"the video latent has {video_frames} frames, not more than its {self.video_frames} "
                             "reference frames; the clip needs at least one frame of its own")
        if audio_length <= self.audio_total:
            raise ValueError(f"the audio latent has {audio_length} positions, not more than its {self.audio_total} "
                             "reference positions; the clip needs audio of its own")

    def video_positions(self, frames: int) -> torch.Tensor:
        """Temporal positions ``[frames]`` (int64): ``0..F-R-1`` then ``150, 300, ...`` for the reference frames."""
        pos = torch.arange(frames)
        start = frames - self.video_frames
        for j in range(self.video_frames):
            pos[start + j] = VIDEO_OFFSET * (j + 1)
        return pos

    def audio_positions(self, length: int) -> torch.Tensor:
        """Positions ``[length]`` (int64): ``0..L-T-1`` then ``offset*(j+1) + [0..len_j)`` per voice ``j``."""
        pos = torch.arange(length)
        start = length - self.audio_total
        for j, n in enumerate(self.audio_lengths):
            pos[start : start + n] = torch.arange(self.audio_offset * (j + 1), self.audio_offset * (j + 1) + n)
            start += n
        return pos


def _polar32(positions: torch.Tensor, pairs: int, scale: float | None) -> torch.Tensor:
    """``polar(1, pos * scale * theta^(-2j/d))`` computed in float32 as ``rope_params_with_offset``: ``[n, pairs]``
    complex64. ``scale`` None multiplies by nothing (the video call); a float is a 0-d float32 factor."""
    dim = 2 * pairs
    inv = 1.0 / torch.pow(THETA, torch.arange(0, dim, 2).to(torch.float32).div(dim))  # [pairs] float32
    if scale is not None:
        inv = torch.tensor(scale, dtype=torch.float32) * inv
    ang = torch.outer(positions, inv)  # int64 x float32 -> float32
    return torch.polar(torch.ones_like(ang), ang)


@functools.lru_cache(maxsize=32)
@_normal_tensors
def _video_ref_table(f: int, h: int, w: int, head_dim: int, layout: RefLayout, device: torch.device) -> torch.Tensor:
    pf, ph, pw = axis_pairs(head_dim)
    ft = _polar32(layout.video_positions(f), pf, None).to(torch.complex128)  # [f, pf]

    def axis64(n: int, pairs: int) -> torch.Tensor:  # the official rope_params (float64 angles)
        dim = 2 * pairs
        inv = 1.0 / torch.pow(THETA, torch.arange(0, dim, 2).to(torch.float64).div(dim))
        ang = torch.outer(torch.arange(n), inv)
        return torch.polar(torch.ones_like(ang), ang)

    fh, fw = axis64(h, ph), axis64(w, pw)
    table = torch.cat([
        ft.view(f, 1, 1, pf).expand(f, h, w, pf),
        fh.view(1, h, 1, ph).expand(f, h, w, ph),
        fw.view(1, 1, w, pw).expand(f, h, w, pw),
    ], dim=-1).reshape(f * h * w, 1, pf + ph + pw)
    return table.to(device)  # complex128 [L, 1, c]


@functools.lru_cache(maxsize=32)
@_normal_tensors
def _audio_ref_table(length: int, head_dim: int, layout: RefLayout, device: torch.device) -> torch.Tensor:
    c = head_dim // 2
    pt = axis_pairs(head_dim)[0]
    table = torch.ones(length, c, dtype=torch.complex64)  # pairs >= pt pass through (x * (1 + 0i))
    table[:, :pt] = _polar32(layout.audio_positions(length), pt, layout.audio_scale)
    return table[:, None, :].to(device)  # complex64 [L, 1, c]


def video_ref_table(grid: tuple[int, int, int], head_dim: int, layout: RefLayout, device: torch.device) -> torch.Tensor:
    """Video RoPE table with reference offsets: complex128 ``[F*h*w, 1, head_dim//2]`` for :func:`apply_rope`."""
    f, h, w = (int(g) for g in grid)
    return _video_ref_table(f, h, w, int(head_dim), layout, torch.device(device))


def audio_ref_table(length: int, head_dim: int, layout: RefLayout, device: torch.device) -> torch.Tensor:
    """Audio RoPE table with reference offsets: complex64 ``[L, 1, head_dim//2]`` (rotation in float32)."""
    return _audio_ref_table(int(length), int(head_dim), layout, torch.device(device))


def clear_caches() -> None:
    """Drop the cached reference tables."""
    _video_ref_table.cache_clear()
    _audio_ref_table.cache_clear()
