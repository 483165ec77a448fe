"""Joint video + audio flow sampling with per-modality classifier-free guidance and skip-layer guidance.

The official loop (Ovi ``OviFusionEngine.generate``): one shared timestep per step for both modalities, two
independent solver instances with identical settings, and per step two joint forward passes of the fusion DiT:

- positive: positive text for both towers;
- negative: the video/audio negative prompts, with the fused layer ``slg_layer`` skipped (skip-layer guidance);

combined per modality as ``v = v_neg + scale * (v_pos - v_neg)`` (video scale 4.0, audio scale 3.0 by default).
In image-to-video, latent frame 0 is overwritten with the encoded image before every step and after the loop;
that is one ``clean`` guide (:mod:`ovi_core.sampling.guides`), and any other guides are applied the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Union

import torch

from ovi_core.sampling.guides import Guide, GuideSchedule
from ovi_core.sampling.solvers import make_solver

if TYPE_CHECKING:
    from ovi_core.sampling.cfg_cache import CFGCache

logger = logging.getLogger(__name__)

Context = Union[torch.Tensor, Sequence[torch.Tensor]]
Denoiser = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]

NAN_CHECK_EVERY = 5


class NonFiniteError(ValueError):
    """The model produced NaN or Inf velocities; sampling was stopped."""


def _check_finite(flag: torch.Tensor, first: int, last: int) -> None:
    """Raise if ``flag`` (a device bool accumulated over steps ``first..last``, 1-based) is set. One host sync."""
    if bool(flag):
        where = f"step {last}" if first == last else f"steps {first}-{last}"
        raise NonFiniteError(
            f"the model returned NaN/Inf velocities (first seen within {where}); sampling stopped. Common causes: "
            "float16 overflow (run the model in bfloat16 or float32), a broken or mismatched checkpoint or LoRA, "
            "or an extreme guidance scale"
        )


def sample_joint(
    denoise: Denoiser,
    video: torch.Tensor,
    audio: torch.Tensor,
    *,
    solver: str = "unipc",
    steps: int = 50,
    shift: float = 5.0,
    first_frame: torch.Tensor | None = None,
    callback: Callable[[int, int], None] | None = None,
    check_interrupt: Callable[[], None] | None = None,
    nan_check_every: int = NAN_CHECK_EVERY,
    guides: Sequence[Guide] = (),
    preview: Callable[[int, int, torch.Tensor], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Integrate the joint flow from noise to data.

    Args:
        denoise: ``denoise(video, audio, t) -> (v_video, v_audio)``; ``t`` is float32 ``[B]`` on the video's
            device (integer-valued for unipc/dpm++), e.g. from :func:`make_cfg_denoiser`.
        video: initial noise ``[B, 48, F, H, W]`` (not modified).
        audio: initial noise ``[B, L, 20]`` (not modified).
        solver: ``"unipc"``, ``"euler"`` or ``"dpm++"``.
        steps: number of steps (denoiser calls).
        shift: flow time shift.
        first_frame: optional clean image latent ``[B or 1, 48, 1, H, W]``; latent frame 0 is set to it before every
            step and in the result (image-to-video).
        callback: called as ``callback(i + 1, steps)`` after each step (progress).
        check_interrupt: called before each step; it raises to abort (e.g. ComfyUI's interrupt check).
        nan_check_every: non-finite velocities are flagged on the device at every step without a host sync; the
            flag is read (one sync) every this many steps and after the last step, so a NaN run stops with
            :class:`NonFiniteError` at most ``nan_check_every - 1`` steps late. 1 checks every step.
        guides: :class:`~ovi_core.sampling.guides.Guide` s applied before every step and to the result; the
            replace mode noises ``x0`` with the starting noise ``video``/``audio`` at the solver's sigma. Clean
            guides also need their token masks in the denoiser (``make_cfg_denoiser(video_clean=...)``, from
            :func:`~ovi_core.sampling.guides.clean_masks`).
        preview: called as ``preview(i + 1, steps, x0_video)`` after each step with the step's prediction of the
            clean video latent, ``x0 = x - sigma * v`` (for a latent preview image; costs one subtraction).
    Returns:
        ``(video, audio)`` latents, same shapes and dtypes as the inputs.
    """
    if video.ndim != 5:
        raise ValueError(f"video latent must be [B, C, F, H, W], got shape {tuple(video.shape)}")
    if audio.ndim != 3:
        raise ValueError(f"audio latent must be [B, L, C], got shape {tuple(audio.shape)}")
    if audio.shape[0] != video.shape[0]:
        raise ValueError(f"video and audio batch sizes differ: {video.shape[0]} vs {audio.shape[0]}")
    if nan_check_every < 1:
        raise ValueError(f"nan_check_every must be >= 1, got {nan_check_every}")
    sv = make_solver(solver, steps=steps, shift=shift)
    sa = make_solver(solver, steps=steps, shift=shift)
    batch = video.shape[0]
    device = video.device
    if first_frame is not None:
        expected = (video.shape[1], 1, *video.shape[3:])
        if first_frame.ndim != 5 or tuple(first_frame.shape[1:]) != expected or first_frame.shape[0] not in (1, batch):
            raise ValueError(
                f"first_frame must be [{batch} or 1, {expected[0]}, 1, {expected[2]}, {expected[3]}] to match the video "
                f"latent {tuple(video.shape)}, got {tuple(first_frame.shape)}; encode the image at the video size"
            )
        first_frame = first_frame.to(device=device, dtype=video.dtype)
    guides = list(guides)
    if first_frame is not None:
        guides.append(first_frame_guide(first_frame, frames=video.shape[2]))
    schedule = GuideSchedule(guides, video_noise=video, audio_noise=audio, sigmas=sv.sigmas, steps=steps)
    timesteps = sv.timesteps.to(device=device, dtype=torch.float32)  # one copy; exact for integer timesteps
    video = video.clone()
    audio = audio.clone()
    bad = torch.zeros((), dtype=torch.bool, device=device)
    since = 1
    for i in range(steps):
        if check_interrupt is not None:
            check_interrupt()
        video, audio = schedule.before_step(i, video, audio)
        t = timesteps[i].expand(batch)
        v_video, v_audio = denoise(video, audio, t)
        if v_video.shape != video.shape or v_audio.shape != audio.shape:
            raise ValueError(
                f"denoise returned shapes {tuple(v_video.shape)}, {tuple(v_audio.shape)}; expected "
                f"{tuple(video.shape)}, {tuple(audio.shape)}"
            )
        bad = bad | ~torch.isfinite(v_video).all() | ~torch.isfinite(v_audio).all()
        if (i + 1) % nan_check_every == 0 or i == steps - 1:
            _check_finite(bad, since, i + 1)
            since = i + 2
        if preview is not None:
            preview(i + 1, steps, video - sv.sigmas[i].item() * v_video)
        video = sv.step(v_video, i, video)
        audio = sa.step(v_audio, i, audio)
        if callback is not None:
            callback(i + 1, steps)
    return schedule.finish(video, audio)


def first_frame_guide(first_frame: torch.Tensor, *, frames: int) -> Guide:
    """Image->AV as a guide: ``first_frame`` ``[B or 1, 48, 1, h, w]`` held clean at latent frame 0 of ``frames``."""
    latent = torch.zeros(
        (first_frame.shape[0], first_frame.shape[1], frames, *first_frame.shape[3:]),
        dtype=first_frame.dtype, device=first_frame.device,
    )  # [B or 1, 48, F, h, w]
    latent[:, :, :1] = first_frame
    mask = torch.zeros(frames, dtype=torch.bool)
    mask[0] = True
    return Guide("video", latent, mask, "clean")


def _ctx_batch(ctx: Context, batch: int, name: str) -> torch.Tensor | list[torch.Tensor]:
    """Normalise a text context to ``batch`` rows: a ``[B, Lt, D]`` tensor or a list of B ``[Lt, D]`` tensors.

    Accepts ``[Lt, D]`` (shared by all rows), ``[1 or B, Lt, D]``, or a list of 1 or B ``[Lt, D]`` tensors.
    """
    if isinstance(ctx, torch.Tensor):
        if ctx.ndim == 2:
            ctx = ctx.unsqueeze(0)
        if ctx.ndim != 3 or ctx.shape[0] not in (1, batch):
            raise ValueError(f"{name} must be [Lt, D] or [{batch} or 1, Lt, D], got {tuple(ctx.shape)}")
        return ctx.expand(batch, -1, -1) if ctx.shape[0] != batch else ctx
    rows = list(ctx)
    if len(rows) not in (1, batch) or any(not isinstance(r, torch.Tensor) or r.ndim != 2 for r in rows):
        raise ValueError(f"{name} must be a list of 1 or {batch} tensors [Lt, D]")
    return rows * batch if len(rows) != batch else rows


def _ctx_cat(a: torch.Tensor | list[torch.Tensor], b: torch.Tensor | list[torch.Tensor]):
    """Rows of ``a`` then rows of ``b``; a tensor when both are tensors of the same length, else a list."""
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape[1:] == b.shape[1:]:
        return torch.cat([a, b], dim=0)
    return list(a) + list(b)


def make_cfg_denoiser(
    model_fn: Callable[..., tuple[torch.Tensor, torch.Tensor]],
    *,
    pos_video_ctx: Context,
    pos_audio_ctx: Context,
    neg_video_ctx: Context,
    neg_audio_ctx: Context,
    video_guidance_scale: float = 4.0,
    audio_guidance_scale: float = 3.0,
    slg_layer: int = 11,
    first_frame_clean: bool = False,
    batch_cfg: bool = True,
    cfg_cache: CFGCache | None = None,
    video_clean: torch.Tensor | None = None,
    audio_clean: torch.Tensor | None = None,
) -> Denoiser:
    """Wrap the fusion DiT into ``denoise(video, audio, t) -> (v_video, v_audio)`` with CFG and skip-layer guidance.

    ``model_fn(video, audio, t, video_context, audio_context, *, first_frame_clean, slg_layer, slg_mask)`` is the
    fusion DiT's forward: video ``[B, 48, F, H, W]``, audio ``[B, L, 20]``, t float ``[B]``, contexts
    ``[B, Lt, D]`` tensors or lists of B ``[Lt, D]`` tensors, ``slg_mask`` bool ``[B]`` (rows that skip the fused
    layer ``slg_layer``); returns velocities of the input shapes.

    The negative pass uses the negative contexts and skips layer ``slg_layer`` (``slg_layer <= 0``: no skip, the
    mask is all False). Per modality ``v = v_neg + scale * (v_pos - v_neg)``, computed in the model's output dtype.
    With ``batch_cfg`` both passes run as one batch of 2B rows (positive rows first); otherwise as two calls. When
    both scales are 1 the negative pass is skipped and the positive prediction is returned unchanged.

    ``cfg_cache`` (:class:`~ovi_core.sampling.cfg_cache.CFGCache`, one per run): on the steps it says, the
    negative pass is skipped and the cached negative (or guidance difference) is reused.

    ``video_clean`` (bool ``[B|1, F]`` or token grid ``[B|1, F, H/2, W/2]``) and ``audio_clean`` (bool ``[B|1, L]``)
    mark tokens the model treats as clean (timestep 0), from :func:`~ovi_core.sampling.guides.clean_masks`; they
    are passed to ``model_fn`` as keyword arguments only when given (rows doubled for the batched CFG pass), so
    model functions without them keep working.
    """
    need_neg = not (video_guidance_scale == 1 and audio_guidance_scale == 1)
    gv, ga = float(video_guidance_scale), float(audio_guidance_scale)
    masks = {k: m for k, m in (("video_clean", video_clean), ("audio_clean", audio_clean)) if m is not None}
    for k, m in masks.items():
        if not isinstance(m, torch.Tensor) or m.dtype != torch.bool:
            raise ValueError(f"{k} must be a bool tensor, got {getattr(m, 'dtype', type(m).__name__)}")
    built: dict[int, tuple] = {}

    def contexts(batch: int) -> tuple:
        # built once per batch size, so the same tensors reach the model at every step and its text cache
        # (keyed by tensor identity) hits instead of growing by one entry per step
        if batch not in built:
            pv = _ctx_batch(pos_video_ctx, batch, "pos_video_ctx")
            pa = _ctx_batch(pos_audio_ctx, batch, "pos_audio_ctx")
            if not need_neg:
                built[batch] = (pv, pa, None, None, None, None)
            else:
                nv = _ctx_batch(neg_video_ctx, batch, "neg_video_ctx")
                na = _ctx_batch(neg_audio_ctx, batch, "neg_audio_ctx")
                built[batch] = (pv, pa, nv, na, _ctx_cat(pv, nv), _ctx_cat(pa, na))
        return built[batch]

    def clean_kw(batch: int, device: torch.device, double: bool) -> dict[str, torch.Tensor]:
        out = {}
        for k, m in masks.items():
            if m.shape[0] not in (1, batch):
                raise ValueError(f"{k} has {m.shape[0]} rows; expected 1 or the batch size {batch}")
            m = m.to(device)
            out[k] = torch.cat([m, m]) if double and m.shape[0] != 1 else m
        return out

    def denoise(video: torch.Tensor, audio: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch = video.shape[0]
        pv, pa, nv, na, cat_v, cat_a = contexts(batch)
        no_skip = torch.zeros(batch, dtype=torch.bool)  # on the CPU: the model reads it without a device sync
        ckw = clean_kw(batch, video.device, False) if masks else {}
        if not need_neg:
            return model_fn(
                video, audio, t, pv, pa, first_frame_clean=first_frame_clean, slg_layer=slg_layer, slg_mask=no_skip,
                **ckw,
            )
        if cfg_cache is not None and not cfg_cache.begin_step(video_guided=gv != 1, audio_guided=ga != 1):
            v_pos, a_pos = model_fn(
                video, audio, t, pv, pa, first_frame_clean=first_frame_clean, slg_layer=slg_layer, slg_mask=no_skip,
                **ckw,
            )
            return cfg_cache.combine(v_pos, a_pos, video_scale=gv, audio_scale=ga)
        skip = torch.full((batch,), slg_layer > 0, dtype=torch.bool)
        if batch_cfg:
            v_all, a_all = model_fn(
                torch.cat([video, video]),  # [2B, 48, F, H, W]
                torch.cat([audio, audio]),  # [2B, L, 20]
                torch.cat([t, t]),  # [2B]
                cat_v,
                cat_a,
                first_frame_clean=first_frame_clean,
                slg_layer=slg_layer,
                slg_mask=torch.cat([no_skip, skip]),
                **(clean_kw(batch, video.device, True) if masks else {}),
            )
            v_pos, v_neg = v_all[:batch], v_all[batch:]
            a_pos, a_neg = a_all[:batch], a_all[batch:]
        else:
            v_pos, a_pos = model_fn(
                video, audio, t, pv, pa, first_frame_clean=first_frame_clean, slg_layer=slg_layer, slg_mask=no_skip,
                **ckw,
            )
            v_neg, a_neg = model_fn(
                video, audio, t, nv, na, first_frame_clean=first_frame_clean, slg_layer=slg_layer, slg_mask=skip,
                **ckw,
            )
        if cfg_cache is not None:
            cfg_cache.store(v_pos, v_neg, a_pos, a_neg)
        v = v_pos if gv == 1 else v_neg + gv * (v_pos - v_neg)
        a = a_pos if ga == 1 else a_neg + ga * (a_pos - a_neg)
        return v, a

    return denoise
