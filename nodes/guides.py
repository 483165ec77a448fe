"""Guide nodes: a given sound, given frames or a redo range -> OVI_GUIDES for OviJointSampler (and the decoders).

Each node appends to an optional incoming OVI_GUIDES list, so several guides chain into one sampler input.
"""

from __future__ import annotations

from . import _patcher
from ._types import OVI_AUDIO_VAE, OVI_GUIDES, OVI_LATENTS, OVI_MODEL, OVI_VIDEO_VAE, GuideItem

MODES = ["replace", "clean"]
SECONDS = ["auto", "5", "10"]

_MODE_TIP = ("replace (default): the given part is noised to each step's level with one fixed noise draw (the "
             "flow-matching forward process), so the model sees one joint state at one timestep, as in training. "
             "clean: its tokens get timestep 0 and stay clean, as image->AV's first frame. Ovi was not trained "
             "for either; both are training-free.")
_UNTIL_TIP = ("replace mode: enforce the given part during this fraction of the steps only (1.0 = all steps, and "
              "the result equals it exactly); clean mode needs 1.0.")
_SECONDS_TIP = "Clip length the guide is made for; must match the sampler's seconds (auto: the model's own)."
_CHAIN_TIP = "Optional guides to add this one to (chain several guide nodes into one sampler input)."
_START_TIP = "Skip this many seconds of the given {what} first (trim its start in the graph). 0: from the beginning."
_MAX_TIP = ("Use at most this many seconds of the given {what}, counted from start (trim its end in the graph). "
            "0: all of it; a longer {what} than the clip holds is refused with the maximum.")


def _trim_inputs(what: str) -> dict:
    return {
        "start": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 3600.0, "step": 0.01, "advanced": True,
                            "tooltip": _START_TIP.format(what=what)}),
        "max_seconds": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 3600.0, "step": 0.01, "advanced": True,
                                  "tooltip": _MAX_TIP.format(what=what)}),
    }


def _check_range(name: str, value, lo: float, hi: float) -> str | None:
    """ComfyUI skips its own min/max check for inputs that VALIDATE_INPUTS takes, so it is done here."""
    if value is None:
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        return f"{name} must be a number, got {value!r}."
    if not lo <= v <= hi:
        return f"{name} must be between {lo:g} and {hi:g} seconds, got {v:g}."
    return None




def _sample_rate(value) -> int:
    """An AUDIO's sample rate as a positive int (a float NaN or a string from a custom node: a clear error)."""
    try:
        rate = int(value)
    except (TypeError, ValueError, OverflowError):
        rate = 0
    if rate <= 0:
        raise ValueError(f"the audio's sample_rate must be a positive number of samples per second, got {value!r}; "
                         "load the sound with LoadAudio.")
    return rate


def _version(model, seconds: str) -> str:
    from .sampling import OviJointSampler

    return OviJointSampler.spec_version(model.version, str(seconds))


class OviAudioGuide:
    """AUDIO (any rate, mono/stereo) at an offset -> audio guide (MMAudio VAE latent + mask)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "audio_vae": (OVI_AUDIO_VAE, {"tooltip": "MMAudio VAE + BigVGAN from OviAudioVAELoader (encodes the "
                                                         "sound)."}),
                "model": (OVI_MODEL, {"tooltip": "The fusion model; its version fixes the clip's length."}),
                "audio": ("AUDIO", {"tooltip": "The sound the clip must carry (e.g. from LoadAudio): any sample "
                                               "rate, mono or stereo; mixed to mono and resampled to 16 kHz."}),
                "offset": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 10.0, "step": 0.01,
                                     "tooltip": "Where the sound starts in the clip, seconds. Before and after "
                                                "it the sound track is generated."}),
                "mode": (MODES, {"default": "replace", "tooltip": _MODE_TIP}),
                "until": ("FLOAT", {"default": 1.0, "min": 0.01, "max": 1.0, "step": 0.01, "tooltip": _UNTIL_TIP}),
                "seconds": (SECONDS, {"default": "auto", "tooltip": _SECONDS_TIP}),
            },
            "optional": {"guides": (OVI_GUIDES, {"tooltip": _CHAIN_TIP}), **_trim_inputs("sound")},
        }

    @classmethod
    def VALIDATE_INPUTS(cls, offset=None, seconds=None):
        """Queue-time check of what the widgets alone decide: an offset past the end of the clip's sound (a linked
        input arrives as None and is checked when the node runs). ComfyUI reports the message once per input
        named here, so only the two it needs are (start/max_seconds keep ComfyUI's own min/max checks)."""
        from ovi_core.conditioning.trim import longest_audio_seconds

        errors = []
        msg = _check_range("offset", offset, 0.0, 10.0)
        if seconds is not None and str(seconds) not in SECONDS:  # ComfyUI skips its list check for this input too
            errors.append(f"seconds must be one of {', '.join(SECONDS)}, got {seconds!r}.")
        elif msg:
            errors.append(msg)
        elif offset is not None and seconds is not None:
            room = longest_audio_seconds(str(seconds))
            if float(offset) >= room:
                what = "any clip" if str(seconds) == "auto" else f"a {seconds} s clip"
                errors.append(f"offset {float(offset):g} s is past the end of {what}'s sound ({room:.3f} s); give "
                              f"a smaller offset.")
        return " ".join(errors) or True

    RETURN_TYPES = (OVI_GUIDES,)
    RETURN_NAMES = ("guides",)
    OUTPUT_TOOLTIPS = ("The incoming guides plus this sound guide; connect to OviJointSampler's guides (and to "
                       "the decoders to keep the given sound exact).",)
    FUNCTION = "encode"
    SEARCH_ALIASES = ["audio to video", "a2v", "lip sync", "lipsync", "speech to video", "voice to video"]
    CATEGORY = "Ovi/guides"
    DESCRIPTION = ("Audio -> video: the clip carries this sound (lip-sync to a voice line). A sound longer than one "
                   "clip is kept unencoded: OviJointSampler then makes a long clip as long as the sound (chained "
                   "windows), as does OviLongClipSampler; start and max_seconds trim it in the graph.")

    def encode(self, audio_vae, model, audio, offset, mode, until, seconds, guides=None, start=0.0, max_seconds=0.0):
        from ovi_core import validate
        from ovi_core.conditioning.trim import trim_audio

        if not isinstance(audio, dict) or "waveform" not in audio or "sample_rate" not in audio:
            raise ValueError("audio must be a ComfyUI AUDIO (a dict with waveform [B, C, T] and sample_rate).")
        rate = _sample_rate(audio["sample_rate"])
        waveform = trim_audio(audio["waveform"], rate, start=start, max_seconds=max_seconds)
        long_item = _long_audio(waveform, rate, model, seconds, offset=float(offset), mode=mode, until=float(until),
                                audio_vae=audio_vae)
        if long_item is not None:  # longer than one clip: kept for a long clip (chained windows)
            return (list(guides or []) + [long_item],)
        # checked and placed (NaN, length, caps) before the audio VAE is loaded
        req = validate.GuideRequest("audio", version=_version(model, seconds), waveform=waveform, rate=rate,
                                    offset=float(offset), mode=mode, until=float(until))
        (inp,) = validate.check_plan(validate.Plan(guides=[req])).guides[0]
        with _patcher.use(audio_vae) as codec:
            guide = inp.encode(codec, device=audio_vae.device)
        return (list(guides or []) + [GuideItem(guide=guide, source=inp)],)


def _long_audio(waveform, rate: int, model, seconds, *, offset: float, mode: str, until: float,
                audio_vae) -> GuideItem | None:
    """A sound longer than one clip of the model from ``offset``: an unencoded item for a long clip (None
    otherwise); OviJointSampler and OviLongClipSampler encode it with ``audio_vae``."""
    import math

    import torch

    from ovi_core import sizes
    from ovi_core.conditioning import ranges
    from ovi_core.conditioning.audio_in import AudioInput, to_mono_16k
    from ovi_core.sampling.guides import check_mode

    spec = sizes.get_spec(_version(model, seconds))
    if float(offset) + waveform.shape[-1] / int(rate) <= spec.frames / sizes.FPS + 1e-9:
        return None
    check_mode(mode, until)
    samples = to_mono_16k(waveform, int(rate))
    if not bool(torch.isfinite(samples).all()):
        raise ValueError("the audio holds NaN or infinite samples; the file is damaged, give another one")
    samples = samples.clamp(-1.0, 1.0)
    start = ranges.offset_samples(offset)
    inp = AudioInput(samples=samples, start=start, length=math.ceil((start + samples.shape[-1]) / 512), mode=mode,
                     until=float(until))
    return GuideItem(guide=None, source=inp, encoder=audio_vae)


def _long_video(images, fps: float, model, seconds, offset: float = 0.0) -> GuideItem | None:
    """A video longer than one clip of the model, or placed later in the clip (``offset`` seconds): an unencoded
    item for OviLongClipSampler (None otherwise)."""
    from ovi_core import sizes
    from ovi_core.conditioning.video_in import output_size
    from ovi_core.longclip.video_guide import TensorVideo, offset_frames

    src = TensorVideo(images if images.ndim == 4 else images[None], fps, offset=offset_frames(offset))
    if src.frames24 <= sizes.get_spec(_version(model, seconds)).frames and src.offset == 0:
        return None
    output_size(src.height, src.width, area=model.target_area)  # the size check, now
    return GuideItem(guide=None, source=src)


class OviVideoGuide:
    """IMAGE frames + fps, or a VIDEO -> video guide (Wan2.2 VAE latent + per-frame mask)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "video_vae": (OVI_VIDEO_VAE, {"tooltip": "Wan2.2 VAE from OviVideoVAELoader (encodes the frames)."}),
                "model": (OVI_MODEL, {"tooltip": "The fusion model; its version and area fix the clip's length "
                                                 "and size."}),
                "fps": ("FLOAT", {"default": 24.0, "min": 1.0, "max": 240.0, "step": 0.001,
                                  "tooltip": "Frame rate of the images (ignored for a VIDEO, which carries its "
                                             "own); converted to Ovi's 24 fps."}),
                "mode": (MODES, {"default": "replace", "tooltip": _MODE_TIP}),
                "until": ("FLOAT", {"default": 1.0, "min": 0.01, "max": 1.0, "step": 0.01, "tooltip": _UNTIL_TIP}),
                "seconds": (SECONDS, {"default": "auto", "tooltip": _SECONDS_TIP}),
            },
            "optional": {
                "images": ("IMAGE", {"tooltip": "Frames [N, H, W, 3] the clip must show (video -> audio). Resized "
                                                "to the model's area keeping the aspect; the clip takes this size. "
                                                "Fewer frames than the clip: the rest is generated."}),
                "video": ("VIDEO", {"tooltip": "A VIDEO (e.g. from LoadVideo) instead of images; its frames and "
                                               "frame rate are used."}),
                "guides": (OVI_GUIDES, {"tooltip": _CHAIN_TIP}),
                **_trim_inputs("video"),
                "offset": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 3600.0, "step": 0.01,
                                     "tooltip": "Where the video starts in the clip, seconds; the frames before it "
                                                "are generated. Above 0 the guide is for OviLongClipSampler (which "
                                                "places it in the windows it covers)."}),
            },
        }

    RETURN_TYPES = (OVI_GUIDES,)
    RETURN_NAMES = ("guides",)
    OUTPUT_TOOLTIPS = ("The incoming guides plus this video guide; connect to OviJointSampler's guides (and to "
                       "OviDecodeVideo to keep the given frames exact).",)
    FUNCTION = "encode"
    SEARCH_ALIASES = ["video to audio", "v2a", "foley", "add sound to video", "soundtrack"]
    CATEGORY = "Ovi/guides"
    DESCRIPTION = ("Video -> audio: the clip shows these frames and the model makes the sound for them. A video "
                   "longer than one clip (or placed at an offset) is kept unencoded and encoded window by window: "
                   "OviJointSampler then makes a long clip as long as the video, OviLongClipSampler one of its "
                   "seconds. start and max_seconds trim it in the graph; a size that "
                   "does not fit the model is refused.")

    def encode(self, video_vae, model, fps, mode, until, seconds, images=None, video=None, guides=None, start=0.0,
               max_seconds=0.0, offset=0.0):
        from ovi_core import validate
        from ovi_core.conditioning.trim import trim_frames

        if (images is None) == (video is None):
            raise ValueError("connect either images (with fps) or a video to OviVideoGuide, not both or neither.")
        if video is not None:
            if not hasattr(video, "get_components"):
                raise ValueError("video must be a ComfyUI VIDEO (from LoadVideo or CreateVideo).")
            comp = video.get_components()
            images, fps = comp.images, float(comp.frame_rate)
        images = trim_frames(images, float(fps), start=start, max_seconds=max_seconds)
        long_item = _long_video(images, float(fps), model, seconds, float(offset or 0.0))
        if long_item is not None:
            long_item.source.mode = mode
            long_item.encoder = video_vae
            return (list(guides or []) + [long_item],)
        req = validate.GuideRequest("video", version=_version(model, seconds), area=model.target_area, frames=images,
                                    fps=float(fps), mode=mode, until=float(until))
        (inp,) = validate.check_plan(validate.Plan(guides=[req])).guides[0]  # before the video VAE is loaded
        with _patcher.use(video_vae) as vae:
            guide = inp.encode(vae, device=video_vae.device)
        return (list(guides or []) + [GuideItem(guide=guide, source=inp)],)


class OviRedoGuide:
    """Saved/sampled latents + a time range of one stream -> guides that keep everything else."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "latents": (OVI_LATENTS, {"tooltip": "The clip to redo a part of (OviLoadLatents or a sampler)."}),
                "stream": (["audio", "video"], {"default": "audio", "tooltip": "Which stream's range is redone; "
                                                                            "the other is kept whole."}),
                "start": ("FLOAT", {"default": 2.0, "min": 0.0, "max": 10.0, "step": 0.01,
                                    "tooltip": "Start of the range to regenerate, seconds."}),
                "end": ("FLOAT", {"default": 3.5, "min": 0.0, "max": 10.0, "step": 0.01,
                                  "tooltip": "End of the range to regenerate, seconds (every latent touching the "
                                             "range is redone)."}),
                "mode": (MODES, {"default": "replace", "tooltip": _MODE_TIP}),
            },
            "optional": {"guides": (OVI_GUIDES, {"tooltip": _CHAIN_TIP})},
        }

    RETURN_TYPES = (OVI_GUIDES,)
    RETURN_NAMES = ("guides",)
    OUTPUT_TOOLTIPS = ("The incoming guides plus guides that keep everything outside the range; connect to "
                       "OviJointSampler's guides.",)
    FUNCTION = "encode"
    SEARCH_ALIASES = ["inpaint", "redo", "regenerate a range", "video inpainting", "audio inpainting"]
    CATEGORY = "Ovi/guides"
    DESCRIPTION = "Redo a time range of audio or video of a clip and keep the rest (use the same seconds setting)."

    def encode(self, latents, stream, start, end, mode, guides=None):
        from ovi_core.conditioning.redo import redo_latents_guides

        made = redo_latents_guides(latents.video, latents.audio, stream=stream, start=float(start), end=float(end),
                                   mode=mode)
        return (list(guides or []) + [GuideItem(guide=g, source=None) for g in made],)


NODE_CLASS_MAPPINGS = {"OviAudioGuide": OviAudioGuide, "OviVideoGuide": OviVideoGuide, "OviRedoGuide": OviRedoGuide}
NODE_DISPLAY_NAME_MAPPINGS = {
    "OviAudioGuide": "Ovi Audio Guide (bring your own sound)",
    "OviVideoGuide": "Ovi Video Guide (bring your own frames)",
    "OviRedoGuide": "Ovi Redo Range",
}
