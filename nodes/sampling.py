"""Text encoding and the joint audio+video sampler."""

from __future__ import annotations

import logging

from . import _comfy, _patcher, _preview
from ._types import (
    OVI_CONDITIONING,
    OVI_GUIDES,
    OVI_LATENTS,
    OVI_MODEL,
    OVI_REFERENCES,
    OVI_TEXT_ENCODER,
    OVI_VIDEO_VAE,
    OviConditioning,
)

logger = logging.getLogger(__name__)

DEFAULT_PROMPT = (
    "A man in a red coat stands on a rainy city street at night and says <S>Hello from Ovi.<E> "
    "Audio: clear male voice, light rain, distant traffic."
)
VIDEO_NEGATIVE = "jitter, bad hands, blur, distortion"
AUDIO_NEGATIVE = "robotic, muffled, echo, distorted"
# shown in an empty negative box, so the two can be told apart
VIDEO_NEGATIVE_LABEL = "video negative: what the picture should avoid (e.g. jitter, blur)"
AUDIO_NEGATIVE_LABEL = "audio negative: what the sound should avoid (e.g. robotic, muffled)"

# label -> (width, height); rescaled to the model's area keeping the aspect ratio (sides multiples of 32).
# The official recommended sizes (H x W): 704x1280, 1280x704, 960x960, 512x992, 992x512, 960x512, 512x960,
# 720x720, 448x1120.
ASPECT_PRESETS = {
    "16:9 landscape (1280x704)": (1280, 704),
    "9:16 portrait (704x1280)": (704, 1280),
    "1:1 square (960x960)": (960, 960),
    "~2:1 landscape (992x512)": (992, 512),
    "~1:2 portrait (512x992)": (512, 992),
    "~15:8 landscape (960x512)": (960, 512),
    "~8:15 portrait (512x960)": (512, 960),
    "5:2 landscape (1120x448)": (1120, 448),
    "custom (width x height)": None,
    # drafts: kept below the trained area (faster, not what the model was trained for)
    "draft 16:9 landscape (640x352)": (640, 352),
    "draft 9:16 portrait (352x640)": (352, 640),
    "draft 1:1 square (480x480)": (480, 480),
    "draft custom (width x height, not scaled up)": None,
}
DEFAULT_PRESET = "16:9 landscape (1280x704)"
DRAFT = "draft"


def preset_size(aspect: str, width: int, height: int, *, area: int) -> tuple[int, int, bool]:
    """``(height, width, draft)`` in pixels for an aspect choice: rescaled to the model's ``area``, or for a
    ``draft`` choice kept below it (:func:`ovi_core.sizes.draft_hw`)."""
    from ovi_core import sizes

    if aspect not in ASPECT_PRESETS:
        raise ValueError(f"Unknown aspect {aspect!r}; choose one of {list(ASPECT_PRESETS)}.")
    w, h = ASPECT_PRESETS[aspect] or (int(width), int(height))
    if aspect.startswith(DRAFT):
        return (*sizes.draft_hw(h, w, area=area), True)
    return (*sizes.snap_hw_to_area(h, w, area=area), False)


def default_audio_rope_scale() -> float:
    """The audio RoPE scale derived from the two latent rates (0.19676 for 24 fps video, 16 kHz / 512 audio)."""
    try:
        from ovi_core import sizes

        return round(float(sizes.audio_rope_scale()), 5)
    except (ImportError, AttributeError):
        return round((31 / (121 / 24)) / (16000 / 512), 5)


def sampling_values(model, *, steps, shift, seed, slg_layer, solver, video_cfg, audio_cfg) -> dict:
    """The sampler inputs as :class:`ovi_core.validate.Plan`'s ``sampling`` (checked before any VAE or the DiT
    is loaded, with the model's block count for ``slg_layer``)."""
    blocks = getattr(getattr(getattr(model, "module", None), "video_model", None), "blocks", None)
    return {"steps": steps, "shift": shift, "seed": seed, "slg_layer": slg_layer, "solver": solver,
            "video_guidance_scale": video_cfg, "audio_guidance_scale": audio_cfg,
            "num_layers": len(blocks) if blocks is not None else None}


def _family(version: str | None) -> str | None:
    if version is None:
        return None
    return "1.0" if version.startswith("1.0") else "1.1"


class OviTextEncode:
    """Prompt + the two negative prompts -> UMT5 embeddings for the joint sampler."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "text_encoder": (OVI_TEXT_ENCODER, {"tooltip": "The UMT5-XXL encoder from OviTextEncoderLoader."}),
                "prompt": ("STRING", {
                    "multiline": True, "default": DEFAULT_PROMPT,
                    "tooltip": "Scene description. Speech goes in <S>...<E>; the sound is described at the end as "
                               "'Audio: ...' (Ovi 1.1) or <AUDCAP>...<ENDAUDCAP> (Ovi 1.0); the format is "
                               "converted to the model's version. Malformed tags are reported on the node."}),
                "video_negative": ("STRING", {
                    "multiline": True, "default": VIDEO_NEGATIVE, "placeholder": VIDEO_NEGATIVE_LABEL,
                    "tooltip": "Negative prompt for the video tower (official default)."}),
                "audio_negative": ("STRING", {
                    "multiline": True, "default": AUDIO_NEGATIVE, "placeholder": AUDIO_NEGATIVE_LABEL,
                    "tooltip": "Negative prompt for the audio tower (official default)."}),
            },
            "optional": {
                "model": (OVI_MODEL, {
                    "tooltip": "Connect the Ovi model so the audio-caption format matches its version "
                               "(1.0: <AUDCAP>, 1.1: 'Audio:'). Without it the prompt is used as written."}),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    RETURN_TYPES = (OVI_CONDITIONING, "STRING")
    RETURN_NAMES = ("conditioning", "prompt_used")
    OUTPUT_TOOLTIPS = ("Prompt and negative-prompt embeddings; to OviJointSampler.",
                       "The prompt as encoded, after converting its audio caption to the model's format.")
    FUNCTION = "encode"
    SEARCH_ALIASES = ["ovi prompt", "clip text encode", "negative prompt", "speech prompt"]
    CATEGORY = "Ovi"
    DESCRIPTION = "Encodes the prompt and the video/audio negative prompts with UMT5-XXL."

    def encode(self, text_encoder, prompt, video_negative, audio_negative, model=None, unique_id=None):
        from ovi_core.text.conditioning import encode_prompts

        version = model.version if model is not None else None
        with _patcher.use(text_encoder) as te:
            cond = encode_prompts(te, prompt, video_negative=video_negative, audio_negative=audio_negative,
                                  version=version)
        cond = cond.to("cpu")
        if cond.warnings:  # one text (each message replaces the node's previous one)
            _comfy.show_text(unique_id, "\n".join(f"Ovi prompt warning: {w}" for w in cond.warnings))
        out = OviConditioning(cond=cond, version=version, warnings=list(cond.warnings))
        return {"ui": {"text": list(cond.warnings)}, "result": (out, cond.prompt)}


SPEED_INPUTS = {
    "preset": (["default", "fast"], {
        "default": "default",
        "tooltip": "fast: the few-step recipe for a distilled (FastWan-style) Wan2.2-TI2V-5B LoRA on the video tower "
                   "(load it with OviLoraLoader): 6 steps for 5 s, 10 for 10 s, both CFG scales 1, shift 6; it "
                   "overrides steps, shift and the CFG scales. default: the values set on this node."}),
    "cfg_reuse_refresh": ("INT", {
        "default": 0, "min": 0, "max": 100, "advanced": True,
        "tooltip": "Fewer guidance passes: inside the window below, run the negative pass only every this many steps "
                   "and reuse it in between (0 = off, the official full guidance). Try 5."}),
    "cfg_reuse_start": ("FLOAT", {"default": 0.3, "min": 0.0, "max": 1.0, "step": 0.01, "advanced": True,
                                  "tooltip": "Start of the CFG reuse window, as a fraction of the steps."}),
    "cfg_reuse_end": ("FLOAT", {"default": 0.9, "min": 0.0, "max": 1.0, "step": 0.01, "advanced": True,
                                "tooltip": "End of the CFG reuse window, as a fraction of the steps."}),
    "cfg_reuse_towers": (["both", "video", "audio"], {
        "default": "both", "advanced": True,
        "tooltip": "Which towers may reuse. The towers run together, so a pass is saved only where every guided "
                   "tower reuses (a tower with CFG 1 needs none)."}),
    "cfg_reuse_mode": (["delta", "negative"], {
        "default": "delta", "advanced": True,
        "tooltip": "Reuse the guidance difference (delta, steadier) or the negative prediction itself."}),
    "step_cache_threshold": ("FLOAT", {
        "default": 0.0, "min": 0.0, "max": 5.0, "step": 0.01, "advanced": True,
        "tooltip": "Step cache: skip a whole step (both towers) while the accumulated relative change of the input "
                   "stays below this, reusing the last velocities. 0 = off (identical to the full run). Try 0.1-0.3."}),
}


class OviJointSampler:
    """Joint flow-matching sampling of video and audio latents (both towers share each step)."""

    @classmethod
    def INPUT_TYPES(cls):
        rope = default_audio_rope_scale()
        return {
            "required": {
                "model": (OVI_MODEL, {"tooltip": "The fusion DiT from OviFusionModelLoader."}),
                "conditioning": (OVI_CONDITIONING, {"tooltip": "Prompt embeddings from OviTextEncode."}),
                "aspect": (list(ASPECT_PRESETS), {
                    "default": DEFAULT_PRESET,
                    "tooltip": "Frame shape. The size is rescaled to the model's area (720x720 for Ovi 1.0, "
                               "960x960 for 1.1) keeping the aspect ratio, sides multiples of 32. 'custom' uses "
                               "width and height (under the advanced inputs). With an image input, the image's "
                               "aspect wins. 'draft' sizes stay below the trained area: quicker, but quality "
                               "below the trained area is not what the model was trained for."}),
                "width": ("INT", {"default": 1280, "min": 128, "max": 4096, "step": 32, "advanced": True,
                                  "tooltip": "Width, used only with the 'custom' aspects (rescaled to the model's "
                                             "area; 'draft custom': kept if below it); ignored otherwise."}),
                "height": ("INT", {"default": 704, "min": 128, "max": 4096, "step": 32, "advanced": True,
                                   "tooltip": "Height, used only with the 'custom' aspects (rescaled to the model's "
                                              "area; 'draft custom': kept if below it); ignored otherwise."}),
                "seconds": (["auto", "5", "10"], {
                    "default": "auto",
                    "tooltip": "Clip length: 5 s (121 frames) or 10 s (241 frames). auto: what the model was "
                               "trained for. 10 s needs Ovi 1.1 (model_960x960_10s.safetensors is trained for it)."}),
                "steps": ("INT", {"default": 50, "min": 1, "max": 200,
                                  "tooltip": "Sampling steps (official 50; 30-40 is faster)."}),
                "solver": (["unipc", "dpm++", "euler"], {"default": "unipc", "advanced": True,
                                                       "tooltip": "Flow-matching solver (official: unipc)."}),
                "shift": ("FLOAT", {"default": 5.0, "min": 0.1, "max": 20.0, "step": 0.1, "advanced": True,
                                    "tooltip": "Timestep shift of the flow schedule (official 5.0)."}),
                "video_cfg": ("FLOAT", {"default": 4.0, "min": 0.0, "max": 20.0, "step": 0.1,
                                        "tooltip": "Classifier-free guidance scale of the video tower (official 4.0)."}),
                "audio_cfg": ("FLOAT", {"default": 3.0, "min": 0.0, "max": 20.0, "step": 0.1,
                                        "tooltip": "Classifier-free guidance scale of the audio tower (official 3.0)."}),
                "slg_layer": ("INT", {"default": 11, "min": -1, "max": 63, "advanced": True,
                                      "tooltip": "Skip-layer guidance: fused block dropped in the negative pass "
                                                 "(official 11); -1 or 0 disables it."}),
                "seed": ("INT", {"default": 103, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True,
                                 "tooltip": "Noise seed (official 103); the same seed gives the same clip on "
                                            "any device."}),
            },
            "optional": {
                "image": ("IMAGE", {"tooltip": "Optional first frame (image -> audio+video). Resized to the model's "
                                               "area; the video takes its aspect. Needs video_vae."}),
                "video_vae": (OVI_VIDEO_VAE, {"tooltip": "Wan2.2 VAE, needed to encode the first frame."}),
                "audio_rope_scale": ("FLOAT", {
                    "default": rope, "min": 0.0, "max": 4.0, "step": 0.00001, "round": 0.00001, "advanced": True,
                    "tooltip": f"Advanced: temporal RoPE scale of the audio tower, which aligns audio token i with "
                               f"video latent frame scale*i. The default {rope} = video latent rate (31 latents per "
                               f"121/24 s) / audio latent rate (16000/512 per s), the official value."}),
                **SPEED_INPUTS,
                "guides": (OVI_GUIDES, {
                    "tooltip": "Optional guides (OviAudioGuide, OviVideoGuide, OviRedoGuide): parts of either "
                               "stream held at given latents while the rest is generated. A video guide's size "
                               "wins over the aspect setting."}),
                "references": (OVI_REFERENCES, {
                    "tooltip": "Optional faces and voices (OviReference, 1-2 people): reference mode "
                               "(DreamID-Omni): four passes per step (positive, negative, faces removed, voices "
                               "removed), no skip-layer guidance, no image input. DreamID-Omni's settings: video_cfg "
                               "3.0, audio_cfg 4.0. Made for DreamID-Omni weights; with Ovi 1.x weights it is "
                               "experimental (not trained for it)."}),
                "video_ref_cfg": ("FLOAT", {
                    "default": 1.5, "min": 0.0, "max": 20.0, "step": 0.1,
                    "tooltip": "Reference mode: weight of (positive - faces removed) in the video guidance "
                               "(DreamID-Omni 1.5); 0 skips that pass."}),
                "audio_ref_cfg": ("FLOAT", {
                    "default": 2.0, "min": 0.0, "max": 20.0, "step": 0.1,
                    "tooltip": "Reference mode: weight of (positive - voices removed) in the audio guidance "
                               "(DreamID-Omni 2.0); 0 skips that pass."}),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    RETURN_TYPES = (OVI_LATENTS,)
    RETURN_NAMES = ("latents",)
    OUTPUT_TOOLTIPS = ("Paired video + audio latents; to OviDecodeVideo and OviDecodeAudio (or OviSaveLatents).",)
    FUNCTION = "sample"
    SEARCH_ALIASES = ["ovi ksampler", "text to video with audio", "image to video with audio", "t2v", "i2v", "audio video generation"]
    CATEGORY = "Ovi"
    DESCRIPTION = "Samples paired video and audio latents with per-modality CFG and skip-layer guidance."

    @staticmethod
    def clip_version(model_version: str, seconds: str) -> tuple[str, list[str]]:
        """The size spec for the requested clip length, plus warnings for a length the model was not trained for
        (:func:`ovi_core.validate.clip_version`, the one rule the CLI and the pipeline use too)."""
        from ovi_core import validate

        return validate.clip_version(model_version, seconds)

    @classmethod
    def spec_version(cls, model_version: str, seconds: str) -> str:
        version, warnings = cls.clip_version(model_version, seconds)
        for w in warnings:
            logger.warning("Ovi: %s", w)
        return version

    def sample(self, model, conditioning, aspect, width, height, seconds, steps, solver, shift, video_cfg, audio_cfg,
               slg_layer, seed, image=None, video_vae=None, audio_rope_scale=None, preset="default",
               cfg_reuse_refresh=0, cfg_reuse_start=0.3, cfg_reuse_end=0.9, cfg_reuse_towers="both",
               cfg_reuse_mode="delta", step_cache_threshold=0.0, guides=None, references=None, video_ref_cfg=1.5,
               audio_ref_cfg=2.0, unique_id=None):
        long_media = any(item.guide is None for item in guides or [])  # longer than one window, or placed later
        from ovi_core import sizes, validate

        validate.check_plan(validate.Plan(sampling=sampling_values(model, steps=steps, shift=shift, seed=seed,
                                                                   slg_layer=slg_layer, solver=solver,
                                                                   video_cfg=video_cfg, audio_cfg=audio_cfg)))
        from ovi_core.sampling.av import encode_image, sample_av, size_source
        from ovi_core.sampling.fast import apply_preset, speed_options
        from ovi_core.sampling.settings import SamplingSettings

        if aspect not in ASPECT_PRESETS:
            raise ValueError(f"Unknown aspect {aspect!r}; choose one of {list(ASPECT_PRESETS)}.")
        height_px, width_px, draft = preset_size(aspect, width, height, area=model.target_area)
        notes: list[str] = []
        fam_c, fam_m = _family(conditioning.version), _family(model.version)
        if fam_c is not None and fam_c != fam_m:
            notes.append(f"the prompt was encoded for Ovi {fam_c} but the model is {fam_m}; connect this model to "
                         "OviTextEncode.")
        version, clip_notes = self.clip_version(model.version, str(seconds))
        notes += clip_notes
        speed = speed_options(cfg_reuse_refresh=int(cfg_reuse_refresh), cfg_reuse_start=float(cfg_reuse_start),
                              cfg_reuse_end=float(cfg_reuse_end), cfg_reuse_towers=cfg_reuse_towers,
                              cfg_reuse_mode=cfg_reuse_mode, step_cache_threshold=float(step_cache_threshold))
        p = apply_preset(preset, seconds=10 if version.endswith("10s") else 5, steps=int(steps),
                         video_guidance_scale=float(video_cfg), audio_guidance_scale=float(audio_cfg),
                         shift=float(shift))
        steps, video_cfg, audio_cfg, shift = p["steps"], p["video_guidance_scale"], p["audio_guidance_scale"], p["shift"]
        w, h = ASPECT_PRESETS[aspect] or (int(width), int(height))
        if references and image is not None:
            raise ValueError("Reference mode has no image -> AV (DreamID-Omni removed it): disconnect the image, the "
                             "faces come from OviReference.")
        if references and long_media:
            raise ValueError("Reference mode makes one clip, but a guide is longer than one clip of this model (or "
                             "placed later): trim it on its guide node (start / max_seconds) or disconnect the "
                             "references.")
        settings = SamplingSettings(
            steps=int(steps), solver=solver, shift=float(shift), video_guidance_scale=float(video_cfg),
            audio_guidance_scale=float(audio_cfg), slg_layer=int(slg_layer), seed=int(seed),
            audio_rope_scale=None if audio_rope_scale is None else float(audio_rope_scale), speed=speed,
        )
        if long_media:  # chained windows, as long as the media (see nodes.longclip.joint_long_clip)
            from .longclip import joint_long_clip

            return (joint_long_clip(model, conditioning.cond, guides, height=height_px, width=width_px,
                                    settings=settings, image=image, video_vae=video_vae, unique_id=unique_id),)
        image_latent = None
        if image is not None:
            if video_vae is None:
                raise ValueError("An image is connected but no video_vae: connect OviVideoVAELoader to the sampler "
                                 "(the first frame is encoded with the Wan2.2 VAE).")
            with _patcher.use(video_vae) as vae:
                image_latent = encode_image(vae, image[0], area=min(model.target_area, height_px * width_px)
                                            if draft else model.target_area, device=video_vae.device,
                                            dtype=video_vae.dtype)
        if references:
            from ovi_core.sampling.reference import EXPERIMENTAL, is_dreamid

            if not is_dreamid(getattr(model, "path", "") or ""):
                notes.append(EXPERIMENTAL)
        warn_lines = [f"Ovi warning: {n}" for n in notes]
        guide_list = [item.guide for item in guides or []]
        sized_by = size_source(guide_list, image_latent)  # the latent sample_av takes the size from, if any
        if sized_by is not None:
            planned = (sized_by.shape[-1] * sizes.SPATIAL_DOWNSAMPLE, sized_by.shape[-2] * sizes.SPATIAL_DOWNSAMPLE)
        else:
            planned = (width_px, height_px)
        if draft:
            from ovi_core.validate import draft_note

            note = draft_note(planned[1], planned[0], area=model.target_area)
            if note:
                notes.append(note)
                warn_lines.append(f"Ovi warning: {note}")
        spec = sizes.MODEL_SPECS[version]
        _comfy.show_text(unique_id, "\n".join([size_text(*planned, spec.frames, sizes.FPS, requested=None,
                                                          prefix="Ovi: sampling ")] + warn_lines),
                         level=logging.WARNING if notes else logging.DEBUG)
        # a latent preview each step where ComfyUI's preview settings give one, else the step count only
        preview = _preview.video_preview(int(steps), unique_id, model.device)
        progress = None if preview is not None else _comfy.progress_bar(int(steps), node_id=unique_id)
        refs = None
        if references:
            from .reference import encode_references

            ref_h, ref_w = (planned[1], planned[0])
            refs = encode_references(references, height=ref_h, width=ref_w, video_ref_scale=video_ref_cfg,
                                     audio_ref_scale=audio_ref_cfg)
        # reference mode: the tails add tokens and the four passes run as 4 rows per forward (as the CLI counts them)
        rows, extra = (2, 0) if refs is None else (
            4, refs.video_frames * (planned[1] // 32) * (planned[0] // 32) + refs.audio_length)
        with _patcher.use_model(model, rows=rows, extra_tokens=extra) as dit:
            latents = sample_av(
                dit, conditioning.cond, height=height_px, width=width_px, version=version, settings=settings,
                image_latent=image_latent, device=model.device, dtype=model.dtype, callback=progress,
                check_interrupt=_comfy.check_interrupt, guides=guide_list, preview=preview, references=refs,
            )
        # what was made, read from the latents themselves (replaces the text shown while sampling)
        _, _, f, lh, lw = latents.video.shape
        frames = (f - 1) * 4 + 1  # Wan2.2 VAE: latent frame 0 = pixel frame 0, then 4 pixel frames per latent frame
        text = size_text(lw * sizes.SPATIAL_DOWNSAMPLE, lh * sizes.SPATIAL_DOWNSAMPLE, frames,
                         getattr(latents, "fps", None) or sizes.FPS, requested=None if sized_by is not None else (w, h))
        lines = [text] + warn_lines
        if speed.active or preset != "default":
            lines.append("Ovi sampling: " + ", ".join(f"{k} {v:g}" for k, v in latents.stats.items()))
        lines.append(attention_text(model))
        _comfy.show_text(unique_id, "\n".join(lines), level=logging.WARNING if notes else logging.INFO)
        return (latents,)


def attention_text(model) -> str:
    """``Ovi attention: <kernel>`` for the DiT handle ``model``: the kernel its runs use on its device and dtype, and
    why it is SDPA when another was chosen (:func:`ovi_core.runtime.attention.describe_backend`)."""
    from ovi_core.runtime.attention import describe_backend

    backend = getattr(model.module, "attention_backend", "auto")
    return "Ovi attention: " + describe_backend(backend, model.device, model.dtype)


def size_text(width: int, height: int, frames: int, fps: float, *, requested: tuple[int, int] | None,
              prefix: str = "Ovi: ") -> str:
    """``Ovi: W x H, N frames (S s at F fps)`` plus the size asked for when snapping to the model's area changed
    it (``requested`` None: the size came from the image)."""
    text = f"{prefix}{width}x{height}, {frames} frames ({frames / fps:.2f} s at {fps:g} fps)"
    if requested is None:
        return text
    if tuple(requested) != (width, height):
        return text + f" (asked {requested[0]}x{requested[1]}, snapped to the model's area)"
    return text
