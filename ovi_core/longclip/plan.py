"""Window arithmetic of a long clip: which frames, audio latents and samples each window covers.

A long clip of ``N`` seconds is a chain of model windows (the 5 s model: 121 frames / 31 video latent frames /
157 audio latents; the 10 s model: 241 / 61 / 314). Window ``k + 1`` starts ``stride`` pixel frames after
window ``k`` and re-uses the last ``overlap_latents`` video latent frames of window ``k`` (and the audio
latents of the same time span) as guides placed at its own start.

Rules (all exact integer arithmetic):

- **Frame count.** ``N`` seconds are ``round(24 N) + 1`` frames: frame 0 plus 24 per second, the model's own
  convention (5 s = 121 frames, 10 s = 241).
- **Sample count.** The audio is ``round(frames * 16000 / 24)`` samples, what the MP4 writer muxes for that
  many frames (121 frames -> 80667 samples; the model's 157 latents decode to 80384, the rest is silence, as
  for a single clip).
- **Video stride.** Window ``k + 1``'s latent frame ``i`` is window ``k``'s latent frame ``F - o + i``, so its
  pixel frame ``p >= 1`` is window ``k``'s pixel frame ``4 (F - o) + p``: the stride is ``4 (F - o)`` pixel
  frames and ``4 (o - 1) + 1`` pixel frames overlap.
- **Audio start.** Window ``k`` starts at pixel frame ``S_k = k * stride``; its audio starts at the audio latent
  nearest that time, ``A_k = round(S_k * 31.25 / 24)`` (half up). Audio and video latents share a grid only
  every 4 s (96 frames = 125 latents), so a window's audio may start up to half a latent (16 ms) off its video;
  the offset never accumulates (each window is rounded from its exact start time). With the 10 s model and
  the default overlap the stride is 192 frames = 8 s and every offset is 0.
- **Windows.** As many as needed for the last window to reach the clip's last frame; the last window's
  surplus frames and samples are dropped.
- **Seams.** The cross-fade of each seam sits in the middle of the overlap (away from both windows' decode
  edges): ``crossfade_frames`` frames and ``crossfade_samples`` samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ovi_core import sizes

FPS = sizes.FPS
SAMPLE_RATE = sizes.SAMPLE_RATE
SAMPLES_PER_LATENT = 512  # mel hop 256 x MMAudio VAE x2
FRAMES_PER_LATENT = 4  # Wan2.2 VAE temporal factor (after the causal first frame)

DEFAULT_OVERLAP_SECONDS = 2.0
DEFAULT_CROSSFADE_SECONDS = 0.5
MIN_SECONDS = 5.0


def clip_frames(seconds: float) -> int:
    """Pixel frames of a clip of ``seconds`` at 24 fps: ``round(24 * seconds) + 1`` (5 s -> 121)."""
    return int(round(float(seconds) * FPS)) + 1


def clip_samples(frames: int) -> int:
    """16 kHz samples that go with ``frames`` frames at 24 fps (what the MP4 writer muxes)."""
    return int(round(frames * SAMPLE_RATE / FPS))


def audio_start_latent(frame: int) -> int:
    """The audio latent nearest the time of pixel frame ``frame``: ``round(frame * 125 / 96)``, half up."""
    return (frame * 125 * 2 + 96) // 192


@dataclass(frozen=True)
class Window:
    """One window of the chain, in global coordinates of the long clip.

    ``frame_start``: its pixel frame 0; ``audio_start``: its audio latent 0 (``* 512`` = its first sample);
    ``video_overlap`` / ``audio_overlap``: latent frames / latents at its start that are guides from the previous
    window (0 for the first); ``av_offset_ms``: its audio start minus its video start, in milliseconds.
    """

    index: int
    frame_start: int
    audio_start: int
    video_overlap: int
    audio_overlap: int

    @property
    def sample_start(self) -> int:
        return self.audio_start * SAMPLES_PER_LATENT

    @property
    def av_offset_ms(self) -> float:
        return 1000.0 * (self.sample_start / SAMPLE_RATE - self.frame_start / FPS)


@dataclass(frozen=True)
class Seam:
    """Where window ``index`` takes over from window ``index - 1``: cross-fade ``[frame0, frame1)`` of the pixel
    frames and ``[sample0, sample1)`` of the samples (global); before it the previous window is used, after it
    the next one. ``latent0/latent1`` and ``alatent0/alatent1``: the same cross-fades in latent units (for
    stitching latents)."""

    index: int
    frame0: int
    frame1: int
    sample0: int
    sample1: int
    latent0: int
    latent1: int
    alatent0: int
    alatent1: int


@dataclass(frozen=True)
class WindowPlan:
    """The whole chain. ``frames`` / ``samples``: the exact output length; ``window_frames`` (121 or 241),
    ``window_latents`` (31 or 61), ``window_audio_latents`` (157 or 314) of the model version ``version``."""

    seconds: float
    version: str
    frames: int
    samples: int
    window_frames: int
    window_latents: int
    window_audio_latents: int
    overlap_latents: int
    stride: int
    windows: tuple[Window, ...]
    seams: tuple[Seam, ...]
    crossfade_frames: int
    crossfade_samples: int

    @property
    def num_windows(self) -> int:
        return len(self.windows)

    @property
    def overlap_frames(self) -> int:
        """Pixel frames two neighbouring windows share: ``4 (o - 1) + 1``."""
        return FRAMES_PER_LATENT * (self.overlap_latents - 1) + 1

    @property
    def window_samples(self) -> int:
        return self.window_audio_latents * SAMPLES_PER_LATENT

    @property
    def latent_frames(self) -> int:
        """Video latent frames of the stitched clip, enough for ``frames`` pixel frames."""
        return 1 + math.ceil((self.frames - 1) / FRAMES_PER_LATENT)

    @property
    def audio_latents(self) -> int:
        """Audio latents of the stitched clip: enough for ``samples`` samples, or as far as the last window
        reaches (its audio may end up to ~35 ms before the last frame; the writer pads that with silence)."""
        last = self.windows[-1].audio_start + self.window_audio_latents
        return min(math.ceil(self.samples / SAMPLES_PER_LATENT), last)

    def describe(self) -> str:
        offs = max((abs(w.av_offset_ms) for w in self.windows), default=0.0)
        return (f"{self.seconds:g} s = {self.frames} frames / {self.samples} samples in {self.num_windows} "
                f"window(s) of {self.window_frames} frames, stride {self.stride} frames, overlap "
                f"{self.overlap_frames} frames ({self.overlap_latents} latent frames), cross-fade "
                f"{self.crossfade_frames} frames / {self.crossfade_samples} samples, max A/V offset {offs:.1f} ms")


def overlap_latents_for(seconds: float) -> int:
    """Video latent frames of an overlap of about ``seconds``: ``1 + round(6 * seconds)`` (2 s -> 13 latent
    frames = 49 pixel frames = 2.04 s)."""
    return 1 + int(round(float(seconds) * FPS / FRAMES_PER_LATENT))


def plan_windows(
    seconds: float,
    *,
    version: str = "1.1",
    overlap_seconds: float = DEFAULT_OVERLAP_SECONDS,
    crossfade_seconds: float = DEFAULT_CROSSFADE_SECONDS,
) -> WindowPlan:
    """Plan a clip of ``seconds`` (>= 5) as windows of the model ``version`` ("1.0", "1.1", "1.1-10s").

    ``overlap_seconds``: context carried from one window to the next (video in whole latent frames, see
    :func:`overlap_latents_for`; audio over the same time span); at least 1/3 s, and it must leave at least one
    latent frame (1/6 s) of new picture per window. ``crossfade_seconds``: the blend at each seam, inside the
    overlap (0 = hard cut in the middle of the overlap).
    """
    spec = sizes.get_spec(version)
    try:
        seconds = float(seconds)
        overlap_seconds = float(overlap_seconds)
        crossfade_seconds = float(crossfade_seconds)
    except (TypeError, ValueError):
        raise ValueError("seconds, overlap and cross-fade must be numbers (seconds)") from None
    if not math.isfinite(seconds) or seconds < MIN_SECONDS:
        raise ValueError(f"a clip must be at least {MIN_SECONDS:g} s long, got {seconds!r}")
    if seconds > 3600:
        raise ValueError(f"{seconds:g} s is more than an hour; split the job into clips of at most 3600 s")
    fl, wf, la = spec.video_latent_frames, spec.frames, spec.audio_latent_length
    max_overlap = (fl - 1) // 2 * FRAMES_PER_LATENT / FPS  # at most half a window: seams never interleave
    o = overlap_latents_for(overlap_seconds) if math.isfinite(overlap_seconds) else 0
    if o < 3 or o > (fl - 1) // 2 + 1:
        raise ValueError(f"overlap must be between 1/3 s and {max_overlap:g} s for the {spec.seconds:.0f} s model "
                         f"({version}), got {overlap_seconds!r}; the default is {DEFAULT_OVERLAP_SECONDS:g} s")
    stride = FRAMES_PER_LATENT * (fl - o)
    ov_frames = FRAMES_PER_LATENT * (o - 1) + 1
    frames = clip_frames(seconds)
    samples = clip_samples(frames)
    n = 1 + max(0, math.ceil((frames - wf) / stride))
    wins = []
    for k in range(n):
        s = k * stride
        a = audio_start_latent(s)
        prev_a = audio_start_latent((k - 1) * stride) if k else 0
        wins.append(Window(index=k, frame_start=s, audio_start=a, video_overlap=o if k else 0,
                           audio_overlap=(prev_a + la - a) if k else 0))
    if not math.isfinite(crossfade_seconds) or crossfade_seconds < 0:
        raise ValueError(f"cross-fade must be >= 0 s, got {crossfade_seconds!r}")
    cf = int(round(crossfade_seconds * FPS))
    cs = int(round(crossfade_seconds * SAMPLE_RATE))
    min_audio_ov = min((w.audio_overlap for w in wins[1:]), default=la) * SAMPLES_PER_LATENT
    if cf > ov_frames - 2 or cs > min_audio_ov - 2 * SAMPLES_PER_LATENT:
        raise ValueError(f"cross-fade {crossfade_seconds:g} s does not fit in the overlap of {ov_frames} frames "
                         f"({ov_frames / FPS:.2f} s); use a shorter cross-fade or a longer overlap")
    seams = []
    for w in wins[1:]:
        prev = wins[w.index - 1]
        f0 = w.frame_start + (ov_frames - cf) // 2
        a_lo, a_hi = w.sample_start, prev.sample_start + la * SAMPLES_PER_LATENT
        s0 = a_lo + (a_hi - a_lo - cs) // 2
        # the same cross-fades on the latent grids: video latent j (j >= 1) holds pixel frames 4j-3..4j
        cl = max(1, cf // FRAMES_PER_LATENT) if cf else 0
        lat0 = w.frame_start // FRAMES_PER_LATENT + 1 + (o - 1 - cl) // 2
        lat1 = lat0 + cl
        al0 = s0 // SAMPLES_PER_LATENT
        al1 = -(-(s0 + cs) // SAMPLES_PER_LATENT) if cs else al0
        seams.append(Seam(index=w.index, frame0=f0, frame1=f0 + cf, sample0=s0, sample1=s0 + cs,
                          latent0=lat0, latent1=lat1, alatent0=al0, alatent1=al1))
    for a, b in zip(seams[:-1], seams[1:], strict=True):
        assert a.frame1 <= b.frame0 and a.sample1 <= b.sample0 and a.latent1 <= b.latent0, (a, b)
    return WindowPlan(seconds=seconds, version=spec.version, frames=frames, samples=samples, window_frames=wf,
                      window_latents=fl, window_audio_latents=la, overlap_latents=o, stride=stride,
                      windows=tuple(wins), seams=tuple(seams), crossfade_frames=cf, crossfade_samples=cs)
