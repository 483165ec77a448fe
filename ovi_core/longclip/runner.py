"""The window loop: sample window after window, each one guided at its start by the end of the previous one.

Window ``k + 1`` gets two guides (:class:`ovi_core.sampling.guides.Guide`, ``replace`` mode by default):

- video: its first ``o`` latent frames are window ``k``'s last ``o`` (``plan.overlap_latents``);
- audio: its first ``audio_overlap`` latents are window ``k``'s latents of the same time span.

A given audio track (latents of the whole clip, ``[1, L, 20]``) guides every window over the span it covers,
in the same mode; so does a given video (each window's own latent ``[1, 48, c, h, w]`` of the frames it covers,
encoded just before that window is sampled, see :mod:`.video_guide`), in the same video guide as the carried
frames, winning over them; a first frame guides window 0 as image->AV does. Window ``k`` uses seed ``seed + k``, so a
one-window clip is exactly the plain clip of that seed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence

import torch

from ovi_core.io.latents import AVLatents
from ovi_core.longclip.plan import WindowPlan
from ovi_core.sampling.av import sample_av
from ovi_core.sampling.settings import SamplingSettings
from ovi_core.text.conditioning import Conditioning

logger = logging.getLogger(__name__)

# progress(window, windows, step, steps), 1-based: "window 3/6, step 12/50"
WindowProgress = Callable[[int, int, int, int], None]
GUIDE_MODES = ("replace", "clean")


def window_guides(
    plan: WindowPlan,
    index: int,
    previous: AVLatents | None,
    *,
    video_shape: Sequence[int],
    given_audio: torch.Tensor | None = None,
    given_video: torch.Tensor | None = None,
    mode: str = "replace",
    until: float = 1.0,
    given_video_at: int = 0,
    given_audio_mask: torch.Tensor | None = None,
    given_video_mask: torch.Tensor | None = None,
) -> list:
    """The guides of window ``index``: from ``previous`` (window ``index - 1``'s latents) and ``given_audio``.

    ``video_shape``: the window's video latent ``[1, 48, F, h, w]``; ``given_audio``: ``[1, L_clip, 20]`` in clip
    coordinates or None; ``given_audio_mask``: bool ``[L_clip]``, the latents of ``given_audio`` that are given
    (None: all; a track placed later in the clip leaves the ones before it to the model); ``given_video``:
    ``[1, 48, c, h, w]``, the latent of the given frames of THIS window, its latent frames
    ``given_video_at .. given_video_at + c - 1`` (a video placed later in the clip), or None;
    ``given_video_mask``: bool ``[c]``, which of those latent frames are given (None: all; a redo leaves its range
    to the model). Returns a list of ``Guide`` (empty for window 0 without given media).
    """
    from ovi_core.sampling.guides import Guide

    win = plan.windows[index]
    la = plan.window_audio_latents
    guides = []
    if index > 0 and previous is None:
        raise ValueError(f"window {index} needs the latents of window {index - 1}")
    vlat = torch.zeros(tuple(video_shape), dtype=torch.float32)
    vmask = torch.zeros(video_shape[2], dtype=torch.bool)
    if index > 0:
        o = win.video_overlap
        vlat[:, :, :o] = previous.video[:1, :, -o:].float()
        vmask[:o] = True
    if given_video is not None:
        j0 = int(given_video_at)
        c = max(0, min(given_video.shape[2], video_shape[2] - j0))
        if tuple(given_video.shape[3:]) != tuple(video_shape[3:]):
            raise ValueError(f"the given video's latent {tuple(given_video.shape)} does not fit the window "
                             f"{tuple(video_shape)}; encode it at the clip's size")
        m = torch.ones(c, dtype=torch.bool) if given_video_mask is None else given_video_mask[:c].to(torch.bool)
        part = vlat[:, :, j0 : j0 + c]  # the user's frames win over the carried ones
        vlat[:, :, j0 : j0 + c] = torch.where(m.view(1, 1, -1, 1, 1), given_video[:1, :, :c].float(), part)
        vmask[j0 : j0 + c] |= m
    if bool(vmask.any()):
        guides.append(Guide("video", vlat, vmask, mode=mode, until=until))
    alat = torch.zeros(1, la, previous.audio.shape[-1] if previous is not None else 20, dtype=torch.float32)
    amask = torch.zeros(la, dtype=torch.bool)
    if index > 0 and win.audio_overlap > 0:
        oa = win.audio_overlap
        alat[:, :oa] = previous.audio[:1, la - oa :].float()
        amask[:oa] = True
    if given_audio is not None:
        lo = win.audio_start
        hi = min(lo + la, given_audio.shape[1])
        if hi > lo and given_audio_mask is None:
            alat[:, : hi - lo] = given_audio[:1, lo:hi].float()  # the user's track wins over the carried one
            amask[: hi - lo] = True
        elif hi > lo:
            m = given_audio_mask[lo:hi].to(torch.bool)
            alat[:, : hi - lo] = torch.where(m.view(1, -1, 1), given_audio[:1, lo:hi].float(), alat[:, : hi - lo])
            amask[: hi - lo] |= m
    if bool(amask.any()):
        guides.append(Guide("audio", alat, amask, mode=mode, until=until))
    return guides


def sample_windows(
    model,
    conds: Sequence[Conditioning],
    plan: WindowPlan,
    *,
    height: int,
    width: int,
    settings: SamplingSettings | None = None,
    image_latent: torch.Tensor | None = None,
    given_audio: torch.Tensor | None = None,
    given_video: Callable[[int], torch.Tensor | tuple[torch.Tensor, int] | None] | None = None,
    guide_mode: str = "replace",
    guide_until: float = 1.0,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    progress: WindowProgress | None = None,
    check_interrupt: Callable[[], None] | None = None,
    load_window: Callable[[int], AVLatents | None] | None = None,
    place: Callable[[], object] | None = None,
    preview: Callable[[int, int, int, int, torch.Tensor], None] | None = None,
    given_audio_mask: torch.Tensor | None = None,
) -> Iterator[AVLatents]:
    """Yield each window's latents (``video [1, 48, F, h, w]``, ``audio [1, L, 20]``, on the CPU) in order.

    ``conds``: one :class:`Conditioning` per window; ``height``/``width``: pixels (with ``image_latent``
    ``[1, 48, 1, h, w]`` its size wins); ``given_audio``: latents ``[1, L_clip, 20]`` of a track for the clip
    (``given_audio_mask`` ``[L_clip]``: which of them are given; None: all);
    ``given_video(k)``: the latent ``[1, 48, c, h, w]`` of window ``k``'s given frames from its latent frame 0, or
    ``(latent, j0)`` for frames from its latent frame ``j0`` (``(latent, j0, mask [c])``: only where ``mask``), or
    None; called just before window ``k`` is sampled
    (so only one window's frames are ever encoded at once);
    ``load_window(k)``: latents of window ``k`` saved by an earlier run, or None to sample it (resume);
    ``place()``: a context manager that places the DiT for one window's sampling (memory modes); ``settings``:
    the sampling settings of every window (window ``k`` samples with ``settings.seed + k``); ``preview(window,
    windows, step, steps, x0_video)``: each step's clean-video prediction (a latent preview). The other arguments
    are those of :func:`ovi_core.sampling.av.sample_av`.
    """
    import contextlib

    settings = settings if settings is not None else SamplingSettings()
    seed = settings.seed
    if len(conds) != plan.num_windows:
        raise ValueError(f"{len(conds)} conditionings for {plan.num_windows} windows")
    if guide_mode not in GUIDE_MODES:
        raise ValueError(f"guide mode must be one of {GUIDE_MODES}, got {guide_mode!r}")
    if image_latent is not None:
        height, width = image_latent.shape[-2] * 16, image_latent.shape[-1] * 16
    vshape = (1, 48, plan.window_latents, height // 16, width // 16)
    previous: AVLatents | None = None
    n = plan.num_windows
    for k in range(n):
        lat = load_window(k) if load_window is not None else None
        if lat is not None:
            logger.info("window %d/%d: loaded from an earlier run", k + 1, n)
        else:
            if check_interrupt is not None:
                check_interrupt()
            logger.info("window %d/%d (frames %d-%d, seed %d)", k + 1, n, plan.windows[k].frame_start,
                        plan.windows[k].frame_start + plan.window_frames - 1, seed + k)
            vgiven = given_video(k) if given_video is not None else None
            vat, vkeep = 0, None
            if isinstance(vgiven, tuple):
                vgiven, vat, *rest = vgiven
                vkeep = rest[0] if rest else None
            guides = window_guides(plan, k, previous, video_shape=vshape, given_audio=given_audio,
                                   given_video=vgiven, mode=guide_mode, until=guide_until, given_video_at=vat,
                                   given_audio_mask=given_audio_mask, given_video_mask=vkeep)
            del vgiven
            cb = None
            if progress is not None:
                def cb(i: int, total: int, _k: int = k) -> None:
                    progress(_k + 1, n, i, total)
            kw = {"guides": guides} if guides else {}
            if preview is not None:
                def pv(i: int, total: int, x0: torch.Tensor, _k: int = k) -> None:
                    preview(_k + 1, n, i, total, x0)

                kw["preview"] = pv
            with place() if place is not None else contextlib.nullcontext():
                lat = sample_av(
                    model, conds[k], height=height, width=width, version=plan.version,
                    settings=settings.with_seed(seed + k), image_latent=image_latent if k == 0 else None,
                    device=device, dtype=dtype, callback=cb,
                    check_interrupt=check_interrupt, **kw,
                )
        if tuple(lat.video.shape[2:]) != tuple(vshape[2:]) or lat.audio.shape[1] != plan.window_audio_latents:
            raise ValueError(f"window {k} latents {tuple(lat.video.shape)}, {tuple(lat.audio.shape)} do not fit the "
                             f"plan ({vshape}, {plan.window_audio_latents} audio latents); a saved window of another "
                             "run? use a fresh windows folder")
        previous = lat
        yield lat


def sample_long_clip(model, conds: Sequence[Conditioning], plan: WindowPlan, **kwargs) -> AVLatents:
    """All windows of ``plan`` joined into one latent pair of the clip (:func:`~.assemble.stitch_latents`):
    video ``[1, 48, plan.latent_frames, h, w]``, audio ``[1, plan.audio_latents, 20]``, for the ordinary decoders.
    ``kwargs`` are those of :func:`sample_windows`."""
    from ovi_core.longclip.assemble import stitch_latents

    video, audio = stitch_latents(((w.video, w.audio) for w in sample_windows(model, conds, plan, **kwargs)), plan)
    return AVLatents(video=video, audio=audio, version=plan.version)
