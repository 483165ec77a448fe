"""A whole long clip with an :class:`~ovi_core.pipeline.OviPipeline`: prompts -> windows -> one MP4, streamed.

Each window is decoded as soon as it is sampled; the :class:`~.assemble.SeamAssembler` cross-fades the seams
and passes the final frames and samples straight to the :class:`~.stream.ClipStreamWriter`. Memory holds one
window (its latents, frames and samples) plus one cross-fade span, whatever the clip's length. An interrupt
leaves no MP4; with ``windows_dir`` the finished windows are saved and a rerun with the same settings resumes.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from ovi_core import sizes
from ovi_core.longclip.assemble import SeamAssembler
from ovi_core.longclip.plan import (
    DEFAULT_CROSSFADE_SECONDS,
    DEFAULT_OVERLAP_SECONDS,
    SAMPLE_RATE,
    SAMPLES_PER_LATENT,
    WindowPlan,
    plan_windows,
)
from ovi_core.longclip.prompts import encode_window_prompts, prompts_for_windows
from ovi_core.longclip.runner import WindowProgress, sample_windows
from ovi_core.longclip.store import WindowStore, job_key, stored, tensor_digest
from ovi_core.longclip.stream import ClipStreamWriter
from ovi_core.runtime.estimate import dit_tokens_for_area
from ovi_core.runtime.memory import dit_on_device, on_device, release_memory
from ovi_core.sampling.settings import SamplingSettings

logger = logging.getLogger(__name__)


@dataclass
class LongClipResult:
    path: str
    plan: WindowPlan
    prompts: list[str]
    audio_source: str  # "generated" or "given"
    warnings: list[str] = field(default_factory=list)


def prepare_audio(waveform: torch.Tensor, sample_rate: int, *, plan: WindowPlan, offset: int = 0) -> torch.Tensor:
    """A given track ``[C, T]`` / ``[1, C, T]`` / ``[T]`` at ``sample_rate`` -> 16 kHz mono ``[1, T16]``, to be
    placed at sample ``offset`` of the clip.

    Raises ``ValueError`` when it is longer than the clip from ``offset`` (the message gives the clip's length),
    starts past the clip's end, or is too short to encode.
    """
    from ovi_core.conditioning.audio_in import to_mono_16k

    if offset < 0 or offset >= plan.samples:
        raise ValueError(f"the audio offset ({offset / SAMPLE_RATE:.3f} s) must lie inside the clip "
                         f"(0 to {plan.samples / SAMPLE_RATE:.3f} s)")
    mono = to_mono_16k(waveform, sample_rate)[None]  # [1, T16]
    dur = mono.shape[1] / SAMPLE_RATE
    at = f" from {offset / SAMPLE_RATE:g} s" if offset else ""
    if offset + mono.shape[1] > plan.samples + SAMPLE_RATE // 100:
        raise ValueError(f"the audio is {dur:.2f} s{at} but the clip is {plan.frames / 24:.2f} s ({plan.seconds:g} "
                         f"s); make the clip at least {offset / SAMPLE_RATE + dur:.2f} s long (--seconds) or trim the "
                         "audio")
    if mono.shape[1] < 2048:
        raise ValueError(f"the audio is too short to encode ({dur:.3f} s); give at least 0.128 s")
    return mono[:, : plan.samples - offset]


def track_latents(codec, track: torch.Tensor, *, offset: int = 0, device: torch.device | str = "cpu",
                  dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A given track ``[1, T16]`` (:func:`prepare_audio`) placed at sample ``offset`` -> ``(latents [1, L, 20]``
    float32 on the CPU in clip coordinates, ``mask [L]`` of the latents that are given, or None for all of them).

    The track is encoded after ``offset`` samples of silence; only the latents lying wholly after the offset are
    given (the silence before it is left to the model). With ``offset == 0`` the track alone is encoded, as before
    offsets existed.
    """
    canvas = track if not offset else torch.cat([torch.zeros(1, offset), track], dim=1)
    with torch.no_grad():
        lat = codec.encode(canvas.to(device=device, dtype=dtype), SAMPLE_RATE).float().cpu()
    if not offset:
        return lat, None
    first = -(-offset // SAMPLES_PER_LATENT)
    return lat, torch.arange(lat.shape[1]) >= first


def generate_long_clip(
    pipe,
    prompts: Sequence[str],
    *,
    seconds: float,
    out: str,
    overlap: float = DEFAULT_OVERLAP_SECONDS,
    crossfade: float = DEFAULT_CROSSFADE_SECONDS,
    image: torch.Tensor | None = None,
    audio: tuple[torch.Tensor, int] | None = None,
    video=None,
    original_media: bool = True,
    width: int | None = None,
    height: int | None = None,
    settings: SamplingSettings | None = None,
    video_negative: str = sizes.DEFAULTS["video_negative_prompt"],
    audio_negative: str = sizes.DEFAULTS["audio_negative_prompt"],
    guide_mode: str = "replace",
    guide_until: float = 1.0,
    windows_dir: str | None = None,
    wav: bool = False,
    progress: WindowProgress | None = None,
    check_interrupt: Callable[[], None] | None = None,
    resume_key=None,
    draft: bool = False,
    audio_offset: float = 0.0,
) -> LongClipResult:
    """Write a clip of ``seconds`` (>= 5) to ``out`` (MP4; with ``wav`` also ``<out>.wav``).

    ``prompts``: one for all windows or one per window (see :mod:`.prompts`); ``image``: first frame
    ``[H, W, 3]`` in [0, 1] for window 1; ``audio``: ``(waveform [C, T], sample_rate)``, a track for the clip
    (it guides every window it covers and is what the MP4 carries there); ``video``: a
    :class:`~.video_guide.FileVideo` / :class:`~.video_guide.TensorVideo` whose frames guide every window they
    cover (each window's frames are read and encoded just before it is sampled; the clip takes the video's
    size; frames past the clip's end are not used; the source's ``offset`` places its first frame later in the
    clip) and, with ``original_media``, are what the MP4 shows there
    (resized), not their VAE round trip; ``settings``: the sampling settings (None: the official defaults). The
    other arguments are those of :meth:`OviPipeline.generate`, plus the plan's ``overlap``/``crossfade`` (seconds)
    and the guides' ``guide_mode``/``guide_until``; ``audio_offset``: where the track starts in the clip, seconds
    (before it the sound is generated). Everything is validated before any weights run. With
    ``windows_dir``, saved windows are reused only when every input matches: prompts, settings (speed options
    included), the image's and the track's values, the video, and ``resume_key`` (JSON-able; what identifies the
    model: weights, fusion files, LoRAs).
    """
    from ovi_core.sampling.av import encode_image

    s = settings if settings is not None else SamplingSettings()
    plan = plan_windows(seconds, version=pipe.version, overlap_seconds=overlap, crossfade_seconds=crossfade)
    window_prompts = prompts_for_windows(prompts, plan.num_windows, plan=plan)
    if guide_mode not in ("replace", "clean"):
        raise ValueError(f"guide mode must be 'replace' or 'clean', got {guide_mode!r}")
    if s.steps < 1:
        raise ValueError("steps must be at least 1.")
    from ovi_core.conditioning import ranges

    aoff = ranges.offset_samples(audio_offset) if audio_offset else 0
    given = prepare_audio(audio[0], audio[1], plan=plan, offset=aoff) if audio is not None else None
    given_video = None
    if video is not None:
        from ovi_core.longclip.video_guide import WindowVideo

        if image is not None:
            raise ValueError("a given video holds every frame including the first; drop the first-frame image")
        given_video = WindowVideo(video, plan, area=pipe.target_area)
        h, w = given_video.height, given_video.width
    else:
        h, w = pipe.size_for(width, height, draft=draft) if image is None else (0, 0)
    image_area = pipe.target_area if image is None else sizes.first_frame_area(
        (image.shape[-3], image.shape[-2]), area=pipe.target_area, draft=draft, width=width, height=height)
    if image is None:
        sizes.validate_size(h, w)
    out = os.fspath(out)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    logger.info("long clip: %s", plan.describe())

    dev, off = pipe.device, pipe._offload
    store = None
    if windows_dir:
        key = job_key({"prompts": window_prompts, "seed": s.seed, "steps": s.steps, "solver": s.solver,
                       "shift": s.shift, "cfg": (s.video_guidance_scale, s.audio_guidance_scale), "slg": s.slg_layer,
                       "size": (h, w), "plan": (plan.version, plan.overlap_latents, plan.num_windows),
                       "image": tensor_digest(image), "audio": tensor_digest(given),
                       "video": None if video is None else (getattr(video, "path", None), video.frames24,
                                                            video.height, video.width,
                                                            *([video.offset] if getattr(video, "offset", 0) else [])),
                       **({"audio_offset": aoff} if aoff and given is not None else {}),
                       "negatives": (video_negative, audio_negative), "guides": (guide_mode, guide_until),
                       "dtype": str(pipe.dtype), "speed": repr(s.speed), "model": resume_key,
                       **({"draft": True} if draft else {})})
        store = WindowStore(windows_dir, key=key)
    try:
        with on_device(pipe.text_encoder, dev, offload=off):
            conds = encode_window_prompts(pipe.text_encoder, window_prompts, video_negative=video_negative,
                                          audio_negative=audio_negative, version=pipe.version)
        vae_dtype = next(pipe.video_vae.parameters()).dtype
        codec_dtype = next(pipe.audio_codec.parameters()).dtype
        image_latent = None
        if image is not None:
            with on_device(pipe.video_vae, dev, offload=off):
                image_latent = encode_image(pipe.video_vae, image, area=image_area, device=dev, dtype=vae_dtype)
        given_latents = given_mask = None
        if given is not None:
            with on_device(pipe.audio_codec, dev, offload=off):
                given_latents, given_mask = track_latents(pipe.audio_codec, given, offset=aoff, device=dev,
                                                          dtype=codec_dtype)
            logger.info("given audio: %.2f s from %.3f s guides the windows; the MP4 carries it, not its VAE round "
                        "trip", given.shape[1] / SAMPLE_RATE, aoff / SAMPLE_RATE)
        if given_video is not None:
            logger.info("given video: %d frames at 24 fps guide the windows at %dx%d; the MP4 shows %s",
                        given_video.frames, w, h, "them" if original_media else "their VAE round trip")

        def encode_window(k: int) -> torch.Tensor | None:
            if given_video is None:
                return None
            with on_device(pipe.video_vae, dev, offload=off):
                return given_video.window_latent(k, pipe.video_vae, device=dev)

        windows = sample_windows(
            pipe.model, conds, plan, height=h, width=w, settings=s, image_latent=image_latent, given_audio=given_latents,
            given_video=encode_window, given_audio_mask=given_mask, guide_mode=guide_mode, guide_until=guide_until,
            device=dev, dtype=pipe.dtype, progress=progress,
            check_interrupt=check_interrupt, load_window=store.load if store is not None else None,
            place=lambda: dit_on_device(pipe.model, dev, memory_mode=pipe.memory_mode,
                                        blocks_on_gpu=pipe.blocks_on_gpu,
                                        tokens=dit_tokens_for_area(pipe.target_area, version=pipe.version)),
        )
        asm = SeamAssembler(plan)
        wav_path = os.path.splitext(out)[0] + ".wav" if wav else None
        with ClipStreamWriter(out, fps=sizes.FPS, sample_rate=SAMPLE_RATE, wav_path=wav_path) as writer:
            for k, lat in enumerate(stored(windows, store)):
                from ovi_core.pipeline import decode_audio, decode_video

                with on_device(pipe.video_vae, dev, offload=off):
                    frames = decode_video(pipe.video_vae, lat.video, device=dev, dtype=vae_dtype)
                with on_device(pipe.audio_codec, dev, offload=off):
                    wave = decode_audio(pipe.audio_codec, lat.audio, device=dev, dtype=codec_dtype)
                start, fstart = asm.samples_out, asm.frames_out
                f, s = asm.add(k, frames, wave)
                del frames, wave
                if given is not None:  # the user's track where it exists
                    lo, hi = max(start, aoff), min(start + s.shape[1], aoff + given.shape[1])
                    if hi > lo:
                        s = s.clone()
                        s[:, lo - start : hi - start] = given[:, lo - aoff : hi - aoff]
                if given_video is not None and original_media:  # the user's frames where they guided
                    f = given_video.splice(fstart, f)
                writer.write(f, s)
                del f, s
                if check_interrupt is not None and k < plan.num_windows - 1:
                    check_interrupt()
            writer.write(torch.zeros(0, 1, 1, 3), asm.finish())
    finally:
        if dev.type == "cuda":
            release_memory()
    return LongClipResult(path=out, plan=plan, prompts=window_prompts,
                          audio_source="generated" if given is None else "given",
                          warnings=[wn for c in conds for wn in c.warnings])
