"""Stage 2 of the pipeline, sampling one clip: seeded noise, the first-frame latent, and :func:`sample_av`, which
runs the joint video+audio loop on the fusion model with per-modality CFG, guides and the speed options.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import torch

from ovi_core import sizes
from ovi_core.io.latents import AUDIO_LATENT_CHANNELS, VIDEO_LATENT_CHANNELS, AVLatents
from ovi_core.sampling.checks import check_seed, check_slg_layer
from ovi_core.sampling.fast import ForwardCounter, SpeedState
from ovi_core.sampling.guides import check_guides, clean_masks
from ovi_core.sampling.joint import make_cfg_denoiser, sample_joint
from ovi_core.sampling.reference import References, make_reference_denoiser
from ovi_core.sampling.settings import SamplingSettings

if TYPE_CHECKING:
    from ovi_core.text.conditioning import Conditioning

logger = logging.getLogger(__name__)

ProgressFn = Callable[[int, int], None]
InterruptFn = Callable[[], None]

FPS = 24


def make_noise(shape: tuple[int, ...], *, seed: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Gaussian noise from a CPU generator so that a seed means the same clip on every device."""
    g = torch.Generator("cpu").manual_seed(int(seed))
    return torch.randn(shape, generator=g, dtype=torch.float32).to(device=device, dtype=dtype)


def encode_image(vae, image: torch.Tensor, *, area: int, device: torch.device, dtype: torch.dtype = torch.float32
                 ) -> torch.Tensor:
    """First frame ``[H, W, 3]`` (or ``[1, H, W, 3]``) in [0, 1] -> normalized latent ``[1, 48, 1, h, w]``.

    The image is resized to the model's area with both sides multiples of 32 (the output video takes
    this size).
    """
    pixels = sizes.preprocess_image(image, area=area)  # [1, 3, 1, H', W'] in [-1, 1]
    with torch.no_grad():
        lat = vae.encode(pixels.to(device=device, dtype=dtype))
    return lat.float()


def sample_av(
    model,
    cond: Conditioning,
    *,
    height: int,
    width: int,
    version: str = "1.0",
    settings: SamplingSettings | None = None,
    image_latent: torch.Tensor | None = None,
    batch_cfg: bool = True,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    callback: ProgressFn | None = None,
    check_interrupt: InterruptFn | None = None,
    guides: Sequence = (),
    preview: Callable[[int, int, torch.Tensor], None] | None = None,
    references: References | None = None,
) -> AVLatents:
    """Joint flow-matching sampling of one clip (both towers share each timestep; per-modality CFG).

    ``height``/``width`` are pixels (multiples of 32); with ``image_latent`` ``[1, 48, 1, h, w]`` its size
    wins and latent frame 0 is held at the image (image -> audio+video). ``settings``: steps, solver, shift, CFG
    scales, skip-layer block, seed, audio RoPE override and speed options (CFG reuse, step cache; counts land in
    ``stats``); None means the official defaults.
    ``guides`` (:class:`ovi_core.sampling.guides.Guide`) hold parts of either stream at given clean latents; a video
    guide's latent size wins too.
    ``references`` (:class:`ovi_core.sampling.reference.References`): reference mode (DreamID-Omni): the faces and
    voices are appended as held tails, the model gets their rotary offsets, and each step runs the four-pass
    reference guidance (the settings' CFG scales plus the two reference scales; no skip-layer guidance). The
    returned latents are the clip's only. The faces' latent size sets the clip's when nothing else does.
    """
    s = settings if settings is not None else SamplingSettings()
    steps, seed, audio_rope_scale = s.steps, s.seed, s.audio_rope_scale
    device = torch.device(device)
    spec = sizes.MODEL_SPECS[version]
    sized_by = size_source(guides, image_latent)
    if sized_by is None and references is not None:
        sized_by = references.faces[0]
    if sized_by is not None:
        height, width = sized_by.shape[-2] * 16, sized_by.shape[-1] * 16
    if references is not None and image_latent is not None:
        raise ValueError("reference mode has no image->AV (DreamID-Omni removed it): give the faces as references "
                         "and no first frame")
    if references is not None and s.speed is not None and s.speed.active:
        raise ValueError("the speed options (CFG reuse, step cache) do not support reference mode yet; run "
                         "references without them")
    sizes.validate_size(height, width)
    check_slg_layer(s.slg_layer, num_layers=len(model.video_model.blocks))
    check_seed(seed)
    vshape = (1, VIDEO_LATENT_CHANNELS, spec.video_latent_frames, height // 16, width // 16)
    ashape = (1, spec.audio_latent_length, AUDIO_LATENT_CHANNELS)
    first = image_latent.to(device=device, dtype=torch.float32) if image_latent is not None else None
    video_clean, audio_clean, guides = _guide_masks(guides, vshape, ashape, first_frame=first is not None)
    if references is not None:  # the tails are extra positions: every shape, guide and mask grows by them
        references.check_size(vshape)
        guides = [references.extend_guide(g) for g in guides]
        video_clean, audio_clean = references.extend_clean(video_clean, audio_clean)
        vshape = (*vshape[:2], vshape[2] + references.video_frames, *vshape[3:])
        ashape = (ashape[0], ashape[1] + references.audio_length, ashape[2])
        guides += references.guides(vshape, ashape)
    video = make_noise(vshape, seed=seed, device=device, dtype=torch.float32)
    audio = make_noise(ashape, seed=seed, device=device, dtype=torch.float32)

    c = cond.to(device, dtype)
    prev_cfg = None
    if audio_rope_scale is not None:  # the scaled-RoPE factor of the audio tower, overridden for this run
        if not 0.0 < float(audio_rope_scale) <= 10.0:
            raise ValueError(f"audio_rope_scale must be in (0, 10], got {audio_rope_scale}; the official value is "
                             f"{sizes.audio_rope_scale():.5f}.")
        prev_cfg = model.audio_model.config
        model.audio_model.config = replace(prev_cfg, temporal_rope_scaling_factor=float(audio_rope_scale))

    def model_fn(v, a, t, vctx, actx, **kw):
        vv, va = model(v.to(dtype), a.to(dtype), t, vctx, actx, **kw)
        return vv.float(), va.float()

    fast = SpeedState.make(s.speed, steps=steps)
    fast.counter = ForwardCounter(model_fn, batch=video.shape[0])
    if references is not None:
        denoise = make_reference_denoiser(
            fast.counter, layout=references.layout, pos_video_ctx=[c.positive], pos_audio_ctx=[c.positive],
            neg_video_ctx=[c.video_negative], neg_audio_ctx=[c.audio_negative],
            video_guidance_scale=s.video_guidance_scale, audio_guidance_scale=s.audio_guidance_scale,
            video_ref_scale=references.video_ref_scale, audio_ref_scale=references.audio_ref_scale,
            batch_cfg=batch_cfg, video_clean=video_clean, audio_clean=audio_clean,
        )
    else:
        denoise = _plain_denoiser(fast, c, s, batch_cfg, first is not None and video_clean is None, video_clean,
                                  audio_clean)
    if fast.step_cache is not None:
        denoise = fast.step_cache.wrap(denoise, on_skip=fast.cfg_cache.advance if fast.cfg_cache else None)
    prev_hook = model.block_hook
    if check_interrupt is not None:
        # honour a cancel between fused blocks too, not only between steps (a step can take many seconds)
        def hook(i: int) -> None:
            check_interrupt()
            if prev_hook is not None:
                prev_hook(i)

        model.block_hook = hook
    try:
        with torch.no_grad(), model.cache_text_embeddings():
            video, audio = sample_joint(
                denoise, video, audio, solver=s.solver, steps=steps, shift=s.shift, first_frame=first,
                callback=callback, check_interrupt=check_interrupt, guides=guides, preview=preview,
            )
    finally:
        model.block_hook = prev_hook
        if prev_cfg is not None:
            model.audio_model.config = prev_cfg
    if references is not None:
        video, audio = references.strip(video, audio)
    stats = fast.stats()
    logger.info("sampling: %s", ", ".join(f"{k} {v:g}" for k, v in stats.items()))
    return AVLatents(video=video.cpu(), audio=audio.cpu(), version=version, fps=sizes.FPS, stats=stats)


def size_source(guides: Sequence, image_latent: torch.Tensor | None) -> torch.Tensor | None:
    """The latent whose spatial size sets the clip's in :func:`sample_av`: the first video guide's, else the
    image's; None when the requested size stands."""
    vguide = next((g for g in guides if getattr(g, "stream", None) == "video"), None)
    return vguide.latent if vguide is not None else image_latent


def _guide_masks(guides: Sequence, vshape: tuple, ashape: tuple, *, first_frame: bool):
    """Checked guides and the model's clean-token masks; with a first frame too, frame 0 joins the video mask."""
    guides = check_guides(guides, video_shape=vshape, audio_shape=ashape)
    video_clean, audio_clean = clean_masks(guides, video_shape=vshape, audio_shape=ashape)
    if video_clean is not None and first_frame:
        video_clean = video_clean.clone()
        video_clean[:, 0] = True  # [1, F] or [1, F, h/2, w/2]
    return video_clean, audio_clean, guides


def _plain_denoiser(fast, c, s: SamplingSettings, batch_cfg: bool, first_frame_clean: bool, video_clean, audio_clean):
    """Ovi's two-pass CFG (+ skip-layer guidance) denoiser for :func:`sample_av`."""
    return make_cfg_denoiser(
        fast.counter,
        pos_video_ctx=[c.positive],
        pos_audio_ctx=[c.positive],
        neg_video_ctx=[c.video_negative],
        neg_audio_ctx=[c.audio_negative],
        video_guidance_scale=s.video_guidance_scale,
        audio_guidance_scale=s.audio_guidance_scale,
        slg_layer=s.slg_layer,
        first_frame_clean=first_frame_clean,
        batch_cfg=batch_cfg,
        cfg_cache=fast.cfg_cache,
        video_clean=video_clean,
        audio_clean=audio_clean,
    )
