"""Joining windows into one clip: decoded windows streamed out frame-exact, or latents stitched into one.

:class:`SeamAssembler` takes each window's decoded frames and samples as soon as it is final and returns the
part of the output that can no longer change; it keeps only the next seam's cross-fade span of the current
window, so memory does not grow with the number of windows. :func:`stitch_latents` joins the windows'
latents into one latent pair of the whole clip (for the ComfyUI decoders and for saving).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from ovi_core.longclip.plan import WindowPlan
from ovi_core.longclip.seams import audio_crossfade, linear_crossfade


class SeamAssembler:
    """Feeds decoded windows in order; emits the final frames and samples of the clip.

    ``add(k, frames, waveform)``: window ``k``'s frames ``[W, H, W', 3]`` (at least ``plan.window_frames``... the
    decoder's 121/241) and waveform ``[C, T]`` at 16 kHz; returns ``(frames [n, H, W', 3], samples [C, m])``, the
    next stretch of the output. After the last window :meth:`finish` returns the remaining samples (silence up
    to ``plan.samples``, see :mod:`.plan`). In total exactly ``plan.frames`` frames and ``plan.samples`` samples.
    """

    def __init__(self, plan: WindowPlan) -> None:
        self.plan = plan
        self.next_window = 0
        self.frames_out = 0
        self.samples_out = 0
        self._tail_frames: torch.Tensor | None = None  # previous window over the next seam's cross-fade
        self._tail_samples: torch.Tensor | None = None

    def add(self, index: int, frames: torch.Tensor, waveform: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        plan = self.plan
        if index != self.next_window or index >= plan.num_windows:
            raise ValueError(f"windows must come in order 0..{plan.num_windows - 1}; expected {self.next_window}, "
                             f"got {index}")
        if waveform.ndim == 1:
            waveform = waveform[None]
        win = plan.windows[index]
        last = index == plan.num_windows - 1
        f_end = plan.frames if last else plan.seams[index].frame0  # emit up to here (global)
        s_end = plan.samples if last else plan.seams[index].sample0
        if frames.shape[0] < min(plan.window_frames, f_end - win.frame_start):
            raise ValueError(f"window {index} has {frames.shape[0]} frames, expected {plan.window_frames}")
        out_f, out_s = [], []
        if index > 0:
            seam = plan.seams[index - 1]
            mine = frames[seam.frame0 - win.frame_start : seam.frame1 - win.frame_start]
            out_f.append(linear_crossfade(self._tail_frames, mine, dim=0) if mine.shape[0] else mine)
            mine_s = waveform[:, seam.sample0 - win.sample_start : seam.sample1 - win.sample_start]
            out_s.append(audio_crossfade(self._tail_samples, mine_s) if mine_s.shape[1] else mine_s)
            self.frames_out, self.samples_out = seam.frame1, seam.sample1
        out_f.append(frames[self.frames_out - win.frame_start : f_end - win.frame_start])
        s_stop = min(s_end, win.sample_start + waveform.shape[1])
        out_s.append(waveform[:, self.samples_out - win.sample_start : max(s_stop, self.samples_out) - win.sample_start])
        if not last:
            seam = plan.seams[index]
            self._tail_frames = frames[seam.frame0 - win.frame_start : seam.frame1 - win.frame_start].clone()
            self._tail_samples = waveform[:, seam.sample0 - win.sample_start : seam.sample1 - win.sample_start].clone()
            if self._tail_samples.shape[1] != seam.sample1 - seam.sample0:
                raise ValueError(f"window {index} has {waveform.shape[1]} samples, expected {plan.window_samples}")
        else:
            self._tail_frames = self._tail_samples = None
        f = torch.cat(out_f, dim=0)
        s = torch.cat(out_s, dim=1)
        self.frames_out += out_f[-1].shape[0]
        self.samples_out += out_s[-1].shape[1]
        self.next_window += 1
        return f, s

    def finish(self, channels: int = 1) -> torch.Tensor:
        """Silence ``[C, m]`` from the last decoded sample to ``plan.samples`` (m is at most a few hundred)."""
        if self.next_window != self.plan.num_windows:
            raise ValueError(f"finish() after {self.next_window} of {self.plan.num_windows} windows")
        pad = self.plan.samples - self.samples_out
        self.samples_out += pad
        return torch.zeros(channels, pad)


def stitch_latents(windows: Iterable[tuple[torch.Tensor, torch.Tensor]], plan: WindowPlan
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Join the windows' latents ``(video [1, 48, F, h, w], audio [1, L, 20])`` in order into the clip's
    ``video [1, 48, plan.latent_frames, h, w]`` and ``audio [1, plan.audio_latents, 20]``.

    Each seam is a linear latent cross-fade over ``[latent0, latent1)`` / ``[alatent0, alatent1)``; before it the
    previous window is kept, after it the next window. In ``replace`` mode the overlaps are equal, so the
    cross-fade leaves them unchanged.
    """
    video = audio = None
    n = 0
    for k, (v, a) in enumerate(windows):
        win = plan.windows[k]
        g0 = win.frame_start // 4  # global index of this window's latent frame 0
        if video is None:
            video = v.new_zeros((v.shape[0], v.shape[1], plan.latent_frames, *v.shape[3:]))
            audio = a.new_zeros((a.shape[0], plan.audio_latents, a.shape[2]))
            lo_v, lo_a = 0, 0
        else:
            seam = plan.seams[k - 1]
            sl = slice(seam.latent0, seam.latent1)
            video[:, :, sl] = linear_crossfade(video[:, :, sl], v[:, :, seam.latent0 - g0 : seam.latent1 - g0], dim=2)
            sla = slice(seam.alatent0, seam.alatent1)
            audio[:, sla] = linear_crossfade(audio[:, sla], a[:, seam.alatent0 - win.audio_start :
                                                              seam.alatent1 - win.audio_start], dim=1)
            lo_v, lo_a = seam.latent1, seam.alatent1
        hi_v = min(plan.latent_frames, g0 + v.shape[2])
        video[:, :, lo_v:hi_v] = v[:, :, lo_v - g0 : hi_v - g0]
        hi_a = min(plan.audio_latents, win.audio_start + a.shape[1])
        audio[:, lo_a:hi_a] = a[:, lo_a - win.audio_start : hi_a - win.audio_start]
        n += 1
    if n != plan.num_windows:
        raise ValueError(f"got {n} windows, the plan has {plan.num_windows}")
    return video, audio
