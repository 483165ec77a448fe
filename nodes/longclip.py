"""Long clips in ComfyUI: one node that samples chained windows and returns the latents of the whole clip."""

from __future__ import annotations

import logging

from . import _comfy, _patcher, _preview
from ._types import OVI_AUDIO_VAE, OVI_GUIDES, OVI_LATENTS, OVI_MODEL, OVI_TEXT_ENCODER, OVI_VIDEO_VAE
from .sampling import (
    ASPECT_PRESETS,
    AUDIO_NEGATIVE,
    AUDIO_NEGATIVE_LABEL,
    DEFAULT_PRESET,
    VIDEO_NEGATIVE,
    VIDEO_NEGATIVE_LABEL,
    attention_text,
    preset_size,
    sampling_values,
)

DEFAULT_PROMPTS = (
    "A woman in a green coat walks through a night market and says <S>Have you tried the dumplings here?<E> "
    "Audio: clear female voice, market chatter.\n"
    "---\n"
    "She stops at a stall, smiles at the vendor and says <S>Two of those, please.<E> "
    "Audio: clear female voice, sizzling pan, market chatter."
)


class OviLongClipSampler:
    """Chained windows, each guided at its start by the end of the previous one (picture and sound)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (OVI_MODEL, {"tooltip": "The fusion DiT from OviFusionModelLoader; its window (5 s or 10 s) "
                                                 "is chained."}),
                "text_encoder": (OVI_TEXT_ENCODER, {"tooltip": "UMT5-XXL from OviTextEncoderLoader (each window's "
                                                               "prompt is encoded here)."}),
                "prompts": ("STRING", {
                    "multiline": True, "default": DEFAULT_PROMPTS,
                    "tooltip": "One prompt per window: one per line, or blocks separated by a line '---'. One prompt "
                               "serves every window; fewer than windows: they are spread over the clip by time "
                               "(3 prompts, 6 windows: 1, 1, 2, 2, 3, 3). The node shows the window -> prompt "
                               "plan before sampling. Put each window's speech in its own <S>...<E>."}),
                "seconds": ("FLOAT", {"default": 20.0, "min": 5.0, "max": 3600.0, "step": 0.5,
                                      "tooltip": "Clip length; the output has round(24 * seconds) + 1 frames."}),
                "aspect": (list(ASPECT_PRESETS), {"default": DEFAULT_PRESET,
                                                  "tooltip": "Frame shape, as on OviJointSampler."}),
                "width": ("INT", {"default": 1280, "min": 128, "max": 4096, "step": 32, "advanced": True,
                                  "tooltip": "Width, used only with the 'custom' aspect (rescaled to the model's "
                                             "area)."}),
                "height": ("INT", {"default": 704, "min": 128, "max": 4096, "step": 32, "advanced": True,
                                   "tooltip": "Height, used only with the 'custom' aspect (rescaled to the model's "
                                              "area)."}),
                "steps": ("INT", {"default": 50, "min": 1, "max": 200, "tooltip": "Sampling steps per window."}),
                "solver": (["unipc", "dpm++", "euler"], {"default": "unipc", "advanced": True,
                                                       "tooltip": "Flow-matching solver."}),
                "shift": ("FLOAT", {"default": 5.0, "min": 0.1, "max": 20.0, "step": 0.1, "advanced": True,
                                    "tooltip": "Timestep shift (official 5.0)."}),
                "video_cfg": ("FLOAT", {"default": 4.0, "min": 0.0, "max": 20.0, "step": 0.1,
                                        "tooltip": "Video guidance scale (official 4.0)."}),
                "audio_cfg": ("FLOAT", {"default": 3.0, "min": 0.0, "max": 20.0, "step": 0.1,
                                        "tooltip": "Audio guidance scale (official 3.0)."}),
                "slg_layer": ("INT", {"default": 11, "min": -1, "max": 63, "advanced": True,
                                      "tooltip": "Skip-layer guidance block (official 11); -1 disables it."}),
                "seed": ("INT", {"default": 103, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True,
                                 "tooltip": "Seed of window 1; window k uses seed + k - 1."}),
            },
            "optional": {
                "overlap": ("FLOAT", {"default": 2.0, "min": 0.35, "max": 5.0, "step": 0.05, "advanced": True,
                                      "tooltip": "Seconds of picture and sound carried from each window into the next "
                                                 "(whole latent frames; at most half a window)."}),
                "crossfade": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 4.0, "step": 0.05, "advanced": True,
                                        "tooltip": "Seconds of the latent blend at each seam, inside the overlap."}),
                "guide_mode": (["replace", "clean"], {"default": "replace", "advanced": True,
                                                      "tooltip": "How the carried part is held: replace (noised to "
                                                                 "each step's level) or clean (timestep 0)."}),
                "video_negative": ("STRING", {"multiline": True, "default": VIDEO_NEGATIVE,
                                              "placeholder": VIDEO_NEGATIVE_LABEL,
                                              "tooltip": "Negative prompt of the video tower."}),
                "audio_negative": ("STRING", {"multiline": True, "default": AUDIO_NEGATIVE,
                                              "placeholder": AUDIO_NEGATIVE_LABEL,
                                              "tooltip": "Negative prompt of the audio tower."}),
                "image": ("IMAGE", {"tooltip": "Optional first frame of window 1 (needs video_vae)."}),
                "video_vae": (OVI_VIDEO_VAE, {"tooltip": "Wan2.2 VAE, to encode the first frame."}),
                "audio": ("AUDIO", {"tooltip": "Optional sound track for the clip (e.g. a long voice recording): it "
                                               "guides every window it covers (needs audio_vae). At most the clip's "
                                               "length."}),
                "audio_vae": (OVI_AUDIO_VAE, {"tooltip": "MMAudio VAE, to encode the audio track."}),
                "guides": (OVI_GUIDES, {"tooltip": "Optional guides from OviVideoGuide / OviAudioGuide, at their "
                                                   "offsets and of any length: the video guides every window it "
                                                   "covers (read "
                                                   "and encoded window by window; needs video_vae; the clip takes "
                                                   "its size), the sound as the audio input. Their mode is "
                                                   "guide_mode; frames or sound past 'seconds' are not used."}),
                "audio_offset": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 3600.0, "step": 0.01, "advanced": True,
                                           "tooltip": "Where the audio input starts in the clip, seconds (before it "
                                                      "the sound is generated). An audio guide brings its own "
                                                      "offset."}),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    RETURN_TYPES = (OVI_LATENTS, "STRING")
    RETURN_NAMES = ("latents", "plan")
    OUTPUT_TOOLTIPS = ("Latents of the whole clip; to OviDecodeVideo and OviDecodeAudio.",
                       "The window plan as text: each window's time range and the prompt it used.")
    FUNCTION = "sample"
    SEARCH_ALIASES = ["long video", "extend video", "multi prompt", "chained windows", "long clip"]
    CATEGORY = "Ovi"
    DESCRIPTION = ("Long clips: chained windows that carry picture and sound across every seam; the latents of the "
                   "whole clip go to OviDecodeVideo / OviDecodeAudio.")

    def sample(self, model, text_encoder, prompts, seconds, aspect, width, height, steps, solver, shift, video_cfg,
               audio_cfg, slg_layer, seed, overlap=2.0, crossfade=0.5, guide_mode="replace",
               video_negative=VIDEO_NEGATIVE, audio_negative=AUDIO_NEGATIVE, image=None, video_vae=None, audio=None,
               audio_vae=None, guides=None, audio_offset=0.0, unique_id=None):
        from ovi_core.conditioning.ranges import offset_samples
        from ovi_core.longclip.plan import plan_windows
        from ovi_core.longclip.prompts import (
            describe_prompt_plan,
            encode_window_prompts,
            prompts_for_windows,
            split_prompts,
        )
        from ovi_core.sampling.settings import SamplingSettings

        if aspect not in ASPECT_PRESETS:
            raise ValueError(f"Unknown aspect {aspect!r}; choose one of {list(ASPECT_PRESETS)}.")
        from ovi_core import validate

        validate.check_plan(validate.Plan(sampling=sampling_values(model, steps=steps, shift=shift, seed=seed,
                                                                   slg_layer=slg_layer, solver=solver,
                                                                   video_cfg=video_cfg, audio_cfg=audio_cfg)))
        media = LongMedia.from_guides(guides, image=image, audio=audio, audio_offset=offset_samples(
            float(audio_offset or 0.0)), video_vae=video_vae, audio_vae=audio_vae)
        height_px, width_px, draft = preset_size(aspect, width, height, area=model.target_area)
        plan = plan_windows(float(seconds), version=model.version, overlap_seconds=float(overlap),
                            crossfade_seconds=float(crossfade))
        window_prompts = prompts_for_windows(split_prompts(prompts), plan.num_windows, plan=plan)
        job = media.prepare(plan, model=model, height=height_px, width=width_px)  # checks, before any model runs
        plan_text = "Ovi long clip: " + plan.describe() + "\n" + describe_prompt_plan(plan, window_prompts)
        if draft and image is None and media.video is None:
            from ovi_core.validate import draft_note

            note = draft_note(height_px, width_px, area=model.target_area)
            plan_text += f"\nOvi warning: {note}" if note else ""
        _comfy.show_text(unique_id, plan_text, level=logging.INFO)  # on the node before anything is sampled

        with _patcher.use(text_encoder) as te:
            conds = encode_window_prompts(te, window_prompts, video_negative=video_negative,
                                          audio_negative=audio_negative, version=model.version)
        settings = SamplingSettings(steps=int(steps), solver=solver, shift=float(shift),
                                    video_guidance_scale=float(video_cfg), audio_guidance_scale=float(audio_cfg),
                                    slg_layer=int(slg_layer), seed=int(seed))
        latents = job.sample(conds, settings=settings, guide_mode=guide_mode, draft=draft, unique_id=unique_id)
        _comfy.show_text(unique_id, plan_text + "\n" + attention_text(model), level=logging.INFO)
        return (latents, plan_text)


class LongMedia:
    """The given media of a long clip in the nodes: a video source, a sound track (ComfyUI AUDIO) at an offset,
    a first frame, and the VAEs that encode them (the sampler's inputs, else the ones the guide nodes used)."""

    def __init__(self, *, video, audio, audio_offset: int, image, video_vae, audio_vae) -> None:
        self.video, self.audio, self.audio_offset, self.image = video, audio, audio_offset, image
        self.video_vae, self.audio_vae = video_vae, audio_vae
        if image is not None and video_vae is None:
            raise ValueError("An image is connected but no video_vae: connect OviVideoVAELoader (the first frame is "
                             "encoded with the Wan2.2 VAE).")
        if video is not None and video_vae is None:
            raise ValueError("A video guide is connected but no video_vae: connect OviVideoVAELoader (each window's "
                             "frames are encoded with the Wan2.2 VAE).")
        if audio is not None and audio_vae is None:
            raise ValueError("An audio track or guide is connected but no audio_vae: connect OviAudioVAELoader.")

    @classmethod
    def from_guides(cls, guides, *, image=None, audio=None, audio_offset: int = 0, video_vae=None,
                    audio_vae=None) -> LongMedia:
        video, track, offset, venc, aenc = _long_guides(guides, image=image, audio=audio)
        if track is not None:
            audio, audio_offset = track, offset
        return cls(video=video, audio=audio, audio_offset=audio_offset, image=image,
                   video_vae=video_vae if video_vae is not None else venc,
                   audio_vae=audio_vae if audio_vae is not None else aenc)

    def end_frame(self) -> int:
        """Clip frames the media reach to (1 without media): the video's last frame + 1, or the frames shown while
        the sound plays."""
        import math

        end = 1
        if self.video is not None:
            end = max(end, self.video.offset + self.video.frames24)
        if self.audio is not None:
            n = self.audio["waveform"].shape[-1]
            secs = self.audio_offset / 16000 + n / int(self.audio["sample_rate"])
            end = max(end, math.floor(secs * 24) + 1)
        return end

    def prepare(self, plan, *, model, height: int, width: int) -> _LongJob:
        """Check everything against ``plan`` (before any model runs) -> the job that samples it."""
        from ovi_core.longclip.job import prepare_audio

        windows_video = None
        if self.video is not None:
            from ovi_core.longclip.video_guide import WindowVideo

            windows_video = WindowVideo(self.video, plan, area=model.target_area)
            height, width = windows_video.height, windows_video.width
        given = prepare_audio(self.audio["waveform"], int(self.audio["sample_rate"]), plan=plan,
                              offset=self.audio_offset) if self.audio is not None else None
        return _LongJob(self, plan, model, height, width, windows_video, given)


class _LongJob:
    def __init__(self, media: LongMedia, plan, model, height: int, width: int, windows_video, given) -> None:
        self.media, self.plan, self.model = media, plan, model
        self.height, self.width, self.windows_video, self.given = height, width, windows_video, given

    def sample(self, conds, *, settings, guide_mode: str = "replace", draft: bool = False, unique_id=None):
        """Sample every window (``conds``: one conditioning per window) -> the clip's OVI_LATENTS."""
        from ovi_core.longclip.job import track_latents
        from ovi_core.longclip.runner import sample_long_clip
        from ovi_core.sampling.av import encode_image

        m, plan, model = self.media, self.plan, self.model
        image_latent = given_latents = given_mask = None
        if m.image is not None:
            with _patcher.use(m.video_vae) as vae:
                image_latent = encode_image(vae, m.image[0], area=min(model.target_area, self.height * self.width)
                                            if draft else model.target_area, device=m.video_vae.device,
                                            dtype=m.video_vae.dtype)
        if self.given is not None:
            with _patcher.use(m.audio_vae) as codec:
                given_latents, given_mask = track_latents(codec, self.given, offset=m.audio_offset,
                                                          device=m.audio_vae.device, dtype=m.audio_vae.dtype)

        def encode_window(k):
            with _patcher.use(m.video_vae) as vae:
                return self.windows_video.window_latent(k, vae, device=m.video_vae.device)

        total = plan.num_windows * int(settings.steps)
        shown = _preview.video_preview(total, unique_id, model.device)  # None: ComfyUI gives no preview this run
        bar = _comfy.progress_bar(total, node_id=unique_id) if shown is None else None

        def progress(win, wins, step, n):
            bar((win - 1) * n + step, wins * n)

        def preview(win, wins, step, n, x0):
            shown((win - 1) * n + step, wins * n, x0)

        with _patcher.use_model(model) as dit:
            return sample_long_clip(
                dit, conds, plan, height=self.height, width=self.width, settings=settings,
                image_latent=image_latent, given_audio=given_latents, given_audio_mask=given_mask,
                given_video=encode_window if self.windows_video is not None else None,
                guide_mode=guide_mode, device=model.device, dtype=model.dtype,
                progress=progress if shown is None else None, preview=preview if shown is not None else None,
                check_interrupt=_comfy.check_interrupt,
            )


def joint_long_clip(model, conditioning, guides, *, height: int, width: int, settings, image=None, video_vae=None,
                    unique_id=None):
    """OviJointSampler with media longer than one window (or placed at an offset): a long clip as long as the media
    (at least one window), every window with the same prompt; the guides' mode is the guide mode."""
    from ovi_core import sizes
    from ovi_core.longclip.plan import plan_windows

    media = LongMedia.from_guides(guides, image=image, video_vae=video_vae)
    items = [it for it in guides or [] if it.source is not None]
    mode = getattr(items[0].source, "mode", "replace") if items else "replace"
    end = max(media.end_frame(), sizes.get_spec(model.version).frames)
    plan = plan_windows((end - 1) / sizes.FPS, version=model.version)
    job = media.prepare(plan, model=model, height=height, width=width)
    _comfy.show_text(unique_id, "Ovi long clip (the media set the length): " + plan.describe(), level=logging.INFO)
    return job.sample([conditioning] * plan.num_windows, settings=settings, guide_mode=mode, unique_id=unique_id)


def _long_guides(guides, *, image, audio):
    """OVI_GUIDES -> ``(video source or None, ComfyUI AUDIO or None, its offset in 16 kHz samples, the video's VAE,
    the sound's VAE)`` for a long clip (the VAEs the guide nodes were given, or None); refuses what it cannot
    take."""
    from ovi_core.conditioning.audio_in import AudioInput
    from ovi_core.conditioning.video_in import VideoInput
    from ovi_core.longclip.video_guide import TensorVideo

    video = track = venc = aenc = None
    offset = 0
    for item in guides or []:
        src = item.source
        if src is None or getattr(src, "exclude", None) is not None:
            raise ValueError("OviLongClipSampler takes video and audio guides (at any offset); a redo guide works "
                             "on OviJointSampler (one clip).")
        if isinstance(src, (TensorVideo, VideoInput)):
            if video is not None:
                raise ValueError("Connect one video guide to OviLongClipSampler, not several.")
            if image is not None:
                raise ValueError("A video guide gives the clip's frames (from its offset on) and is not combined with "
                                 "a first frame; disconnect the image.")
            video = src if isinstance(src, TensorVideo) else TensorVideo(src.frames, 24)
            venc = getattr(item, "encoder", None)
        elif isinstance(src, AudioInput):
            if track is not None or audio is not None:
                raise ValueError("Give one sound track: the audio input or one audio guide, not both.")
            track = {"waveform": src.samples.reshape(1, 1, -1), "sample_rate": 16000}
            offset, aenc = int(src.start), getattr(item, "encoder", None)
        else:
            raise ValueError(f"OviLongClipSampler cannot take a guide made from {type(src).__name__}.")
    return video, track, offset, venc, aenc


NODE_CLASS_MAPPINGS = {"OviLongClipSampler": OviLongClipSampler}
NODE_DISPLAY_NAME_MAPPINGS = {"OviLongClipSampler": "Ovi Long Clip Sampler (chained windows)"}
