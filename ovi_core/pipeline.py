"""The whole job: prompt (+ optional first frame) -> paired latents -> frames + 16 kHz waveform -> MP4.

Each stage is a plain function taking the components it needs (the ComfyUI nodes call them one by one);
:class:`OviPipeline` strings them together for the CLI and notebooks. Stage 1 (text) lives in
:mod:`ovi_core.text.conditioning`, stage 2 (sampling) in :mod:`ovi_core.sampling.av`, devices and precision in
:mod:`ovi_core.runtime.devices`; stage 3 (decoding) is here::

    pipe = OviPipeline.from_weights("ckpts", version="auto", device="cuda", memory_mode="offload")
    result = pipe.generate("A man says <S>Hello.<E> Audio: clear male voice.", seed=103)
    pipe.save(result, "out.mp4")
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from ovi_core import sizes, validate
from ovi_core.io.latents import AUDIO_LATENT_CHANNELS, VIDEO_LATENT_CHANNELS, AVLatents
from ovi_core.runtime.attention import probe_backend
from ovi_core.runtime.devices import check_gpu, pick_device, pick_dtype
from ovi_core.runtime.estimate import dit_tokens
from ovi_core.runtime.memory import MEMORY_MODES, dit_on_device, on_device, release_memory
from ovi_core.sampling.av import FPS, InterruptFn, ProgressFn, encode_image, make_noise, sample_av
from ovi_core.sampling.settings import SamplingSettings
from ovi_core.text.conditioning import Conditioning, encode_prompts

if TYPE_CHECKING:
    from ovi_core.conditioning.reference_in import ReferenceInputs
    from ovi_core.sampling.fast import SpeedOptions

# The stages live in their own modules (devices, text.conditioning, sampling.av); these names stay importable
# from here, where the nodes, the CLI and the tests have always found them.
__all__ = [
    "AUDIO_LATENT_CHANNELS",
    "FPS",
    "SAMPLE_RATE",
    "VIDEO_LATENT_CHANNELS",
    "AVLatents",
    "Conditioning",
    "GenerationResult",
    "InterruptFn",
    "OviPipeline",
    "ProgressFn",
    "decode_audio",
    "decode_video",
    "encode_image",
    "encode_prompts",
    "fusion_file_info",
    "make_noise",
    "pick_device",
    "pick_dtype",
    "sample_av",
]

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000


# ----------------------------------------------------------------------------------------------
# Stage 3: decoding
# ----------------------------------------------------------------------------------------------


def decode_video(vae, latent: torch.Tensor, *, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                 tile_latent: int | None = None, progress: ProgressFn | None = None,
                 memory_budget: int | None = None, return_plan: bool = False):
    """Video latent ``[1, 48, F, h, w]`` -> frames ``[F', H, W, 3]`` float in [0, 1] (ComfyUI IMAGE layout).

    Untiled unless ``tile_latent`` is given or the untiled decode would not fit in the device's free memory (or
    ``memory_budget`` bytes); with ``return_plan`` returns ``(frames, plan)``, where ``plan.tiled`` and
    ``plan.message()`` say whether and why it tiled (see ``ovi_core.vae.decode_plan``).
    """
    if latent.dim() != 5 or latent.shape[1] != VIDEO_LATENT_CHANNELS:
        raise ValueError(f"Expected a video latent [B, 48, F, h, w], got {tuple(latent.shape)}.")
    z = latent[:1].to(device=device, dtype=dtype)
    overlap = {}
    if tile_latent is not None and tile_latent <= 8:  # the default overlap of 8 needs tiles above 8
        overlap = {"tile_overlap": tile_latent // 4}
    plan = vae.plan_decode(z.shape, tile_latent=tile_latent, memory_budget=memory_budget, **overlap)
    if plan.tiled and not plan.requested:
        logger.warning("%s", plan.message())
    with torch.no_grad():
        video = vae.decode(z, progress=progress, plan=plan)
    # converted on the CPU: the GPU holds no float32 copies of the clip (0.3-1.2 GiB the decode plan did not count)
    frames = (video[0].cpu().float().clamp(-1, 1) + 1) / 2  # [3, F, H, W]
    frames = frames.permute(1, 2, 3, 0).contiguous()  # [F, H, W, 3]
    return (frames, plan) if return_plan else frames


def decode_audio(codec, latent: torch.Tensor, *, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Audio latent ``[1, L, 20]`` -> waveform ``[1, 2L*256]`` at 16 kHz, float in [-1, 1]."""
    if latent.dim() != 3 or latent.shape[-1] != AUDIO_LATENT_CHANNELS:
        raise ValueError(f"Expected an audio latent [B, L, 20], got {tuple(latent.shape)}.")
    with torch.no_grad():
        wav = codec.decode(latent[:1].to(device=device, dtype=dtype))
    return wav[0].float().clamp(-1, 1).cpu()  # [1, T]


# ----------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------


def fusion_file_info(path: str) -> dict:
    """Version and target area of a fusion checkpoint: from our own metadata when present (files this
    project writes carry ``ovi.version`` / ``ovi.target_area``), else from the official file name."""
    from ovi_core.io import checkpoints as ck
    from ovi_core.io.checkpoint_id import fusion_version_from_name

    info: dict = {}
    meta: dict = {}
    if str(path).endswith((".safetensors", ".sft")):
        try:
            meta = ck.read_safetensors_header(path)[1]
        except ValueError:
            meta = {}
    elif str(path).lower().endswith(".gguf"):  # `quantize` copies the ovi.* metadata into GGUF strings
        from ovi_core.quant.gguf_file import read_gguf_index

        try:
            meta = read_gguf_index(path)[1]
        except (ValueError, FileNotFoundError):
            meta = {}
    # metadata is user input: checked here, with the file named, before any weight loads
    version = ck.meta_choice(meta, "ovi.version", path=str(path), choices=sizes.MODEL_SPECS)
    area = ck.meta_int(meta, "ovi.target_area", path=str(path), low=sizes.SIDE_MULTIPLE**2,
                       high=sizes.MAX_SIDE**2, example="921600 for 960x960")
    if version is not None:
        info["version"] = version
    if area is not None:
        info["target_area"] = area
    if "version" not in info:
        info["version"] = fusion_version_from_name(path) or "1.0"
    return info


@dataclass
class GenerationResult:
    frames: torch.Tensor  # [F, H, W, 3] float in [0, 1]
    waveform: torch.Tensor  # [1, T] at sample_rate
    sample_rate: int
    fps: int
    latents: AVLatents
    prompt: str
    warnings: list[str]


class OviPipeline:
    """All components of Ovi plus the policy of where they run."""

    def __init__(
        self,
        *,
        model,
        text_encoder,
        video_vae,
        audio_codec,
        version: str = "1.0",
        target_area: int | None = None,
        device: str | torch.device = "auto",
        dtype: str | torch.dtype | None = None,
        memory_mode: str = "gpu",
        blocks_on_gpu: int = 10,
    ) -> None:
        if memory_mode not in MEMORY_MODES:
            raise ValueError(f"memory_mode must be one of {MEMORY_MODES}, got {memory_mode!r}.")
        if version not in sizes.MODEL_SPECS:
            raise ValueError(f"Unknown model version {version!r}; choose one of {sorted(sizes.MODEL_SPECS)}.")
        self.model = model
        self.text_encoder = text_encoder
        self.video_vae = video_vae
        self.audio_codec = audio_codec
        self.version = version
        self.spec = sizes.MODEL_SPECS[version]
        self.target_area = int(target_area or self.spec.area)
        self.device = pick_device(device)
        self.dtype = pick_dtype(dtype, self.device)
        self.memory_mode = memory_mode if self.device.type == "cuda" else "gpu"
        self.blocks_on_gpu = blocks_on_gpu

    @classmethod
    def from_weights(
        cls,
        root: str,
        *,
        version: str = "auto",
        seconds: int | None = None,
        device: str | torch.device = "auto",
        dtype: str | torch.dtype | None = None,
        memory_mode: str = "gpu",
        blocks_on_gpu: int = 10,
        fp8: bool = False,
        attention_backend: str = "auto",
        download: bool | None = None,
        compile: bool = False,
        fusion: str | Sequence[str] | None = None,
        fp8_compute: bool = False,
    ) -> OviPipeline:
        """Load every component from a folder laid out as the official download (see ``ovi_core.io.weights``).

        ``fusion``: a fusion file, or a video + audio tower pair, of any supported format (GGUF, fp8_scaled,
        kijai split) used instead of the folder's fusion model. ``fp8_compute``: fp8 matmuls on CUDA sm_89+
        (see :func:`ovi_core.model.loader.load_fusion`)."""
        from ovi_core.audio.codec import load_audio_codec
        from ovi_core.io.weights import resolve_weights
        from ovi_core.model.loader import load_fusion
        from ovi_core.text.umt5 import load_text_encoder
        from ovi_core.vae.wan_vae import load_wan_vae

        dev = pick_device(device)
        dt = pick_dtype(dtype, dev)
        check_gpu(dev, dt)  # pre-Ampere GPUs are refused before any download or load
        paths = resolve_weights(root, version=version, seconds=seconds, fp8=fp8, download=download,
                                need_fusion=fusion is None)
        fusion_arg = paths.fusion if fusion is None else (fusion if isinstance(fusion, str) else list(fusion))
        keep_on_cpu = memory_mode != "gpu" and dev.type == "cuda"
        load_dev = torch.device("cpu") if keep_on_cpu else dev
        info = fusion_file_info(fusion_arg if isinstance(fusion_arg, str) else fusion_arg[0])
        ver = info.get("version", paths.version) if version == "auto" else paths.version
        logger.info("loading Ovi %s from %s", ver, root)
        model = load_fusion(fusion_arg, device=load_dev, dtype=dt, attention_backend=attention_backend,
                            fp8_compute=fp8_compute)
        vc = model.config.video
        runs = probe_backend(attention_backend, dev, dt, heads=vc.num_heads, head_dim=vc.dim // vc.num_heads)
        logger.info("attention kernel: %s", runs)
        if compile:
            model.compile(dynamic=False)
        text = load_text_encoder(paths.umt5, tokenizer_path=paths.tokenizer, device=load_dev, dtype=dt)
        vae = load_wan_vae(paths.wan_vae, device=load_dev, dtype=torch.float32 if dev.type == "cpu" else dt)
        codec = load_audio_codec(paths.mmaudio_vae, paths.bigvgan, device=load_dev, dtype=torch.float32)
        return cls(model=model, text_encoder=text, video_vae=vae, audio_codec=codec, version=ver,
                   target_area=info.get("target_area"), device=dev, dtype=dt, memory_mode=memory_mode,
                   blocks_on_gpu=blocks_on_gpu)

    # -- stages with placement ---------------------------------------------------------------

    @property
    def _offload(self) -> bool:
        return self.memory_mode != "gpu"

    def size_for(self, width: int | None, height: int | None, *, draft: bool = False) -> tuple[int, int]:
        """(height, width) for text->AV: the request rescaled to the model's area, sides multiples of 32
        (``draft``: a request below the area is kept, see :func:`ovi_core.sizes.draft_hw`)."""
        h = height or int(self.target_area**0.5)
        w = width or int(self.target_area**0.5)
        if draft:
            return sizes.draft_hw(h, w, area=self.target_area)
        return sizes.snap_hw_to_area(h, w, area=self.target_area)

    def generate(
        self,
        prompt: str,
        *,
        image: torch.Tensor | None = None,
        width: int | None = None,
        height: int | None = None,
        steps: int = 50,
        solver: str = "unipc",
        shift: float = 5.0,
        video_guidance_scale: float = 4.0,
        audio_guidance_scale: float = 3.0,
        slg_layer: int = 11,
        seed: int = 103,
        video_negative: str = sizes.DEFAULTS["video_negative_prompt"],
        audio_negative: str = sizes.DEFAULTS["audio_negative_prompt"],
        audio_rope_scale: float | None = None,
        callback: ProgressFn | None = None,
        check_interrupt: InterruptFn | None = None,
        speed: SpeedOptions | None = None,
        guides: Sequence = (),
        original_media: bool = True,
        seconds: int | None = None,
        draft: bool = False,
        references: ReferenceInputs | None = None,
    ) -> GenerationResult:
        """Prompt (+ optional first frame ``[H, W, 3]`` in [0, 1]) -> frames, 16 kHz waveform.

        ``guides``: :class:`ovi_core.sampling.guides.Guide` s or inputs from :mod:`ovi_core.conditioning` (a given sound,
        given frames, a redo); inputs are encoded here. With ``original_media`` the result carries the given
        frames/sound where they were enforced, not their VAE round trip. ``seconds`` (5 or 10, None: what the
        model was trained for) picks the clip length; the result's ``warnings`` hold the prompt warnings, a 10 s
        clip from a 5 s model, and a tiled video decode. ``draft``: a size (or first frame) below the model's
        trained area is kept instead of rescaled up (faster, but not what the model was trained for; warned).
        ``references`` (:func:`ovi_core.conditioning.reference_in.prepare_references`): reference mode (DreamID-Omni
        faces and voices; its size is the output size; no first frame): the four-pass reference guidance with this
        call's CFG scales (DreamID-Omni's are video 3.0, audio 4.0) and no skip-layer guidance.
        """
        from ovi_core.conditioning.apply import encode_inputs, guide_size, splice_originals

        validate.check_generation(
            prompt=prompt, steps=steps, shift=shift, seed=seed, slg_layer=slg_layer, solver=solver,
            video_guidance_scale=video_guidance_scale, audio_guidance_scale=audio_guidance_scale,
            num_layers=len(self.model.video_model.blocks),
        )
        settings = SamplingSettings(
            steps=steps, solver=solver, shift=shift, video_guidance_scale=video_guidance_scale,
            audio_guidance_scale=audio_guidance_scale, slg_layer=slg_layer, seed=seed,
            audio_rope_scale=audio_rope_scale, speed=speed,
        )
        version, notes = validate.clip_version(self.version, seconds)
        for note in notes:
            logger.warning("%s", note)
        image_hw = None
        image_area = self.target_area
        if image is not None:
            ih, iw = (image.shape[-3], image.shape[-2])
            image_area = sizes.first_frame_area((int(ih), int(iw)), area=self.target_area, draft=draft, width=width,
                                                height=height)
            image_hw = sizes.i2v_size_for_image(int(ih), int(iw), area=image_area)
        if references is not None and image is not None:
            raise ValueError("reference mode has no image->AV (DreamID-Omni removed it): give the faces as "
                             "references and no first frame")
        fixed = guide_size(guides, image_hw=image_hw)
        if fixed is None and references is not None:
            fixed = references.size
        h, w = validate.check_size(width, height, area=self.target_area, draft=draft) if image is None else (0, 0)
        if draft:
            note = validate.draft_note(*(image_hw or (h, w)), area=self.target_area)
            if note:
                logger.warning("%s", note)
                notes.append(note)
        if fixed is not None:
            h, w = fixed
            sizes.validate_size(h, w)
        dev, off = self.device, self._offload
        try:
            with on_device(self.text_encoder, dev, offload=off):
                cond = encode_prompts(self.text_encoder, prompt, video_negative=video_negative,
                                      audio_negative=audio_negative, version=self.version)
            image_latent = None
            if image is not None:
                with on_device(self.video_vae, dev, offload=off):
                    image_latent = encode_image(self.video_vae, image, area=image_area, device=dev,
                                                dtype=next(self.video_vae.parameters()).dtype)
            encoded = []
            if guides:
                with on_device(self.video_vae, dev, offload=off), on_device(self.audio_codec, dev, offload=off):
                    encoded = encode_inputs(guides, video_vae=self.video_vae, audio_codec=self.audio_codec,
                                            device=dev)
            refs = None
            if references is not None:
                with on_device(self.video_vae, dev, offload=off), on_device(self.audio_codec, dev, offload=off):
                    refs = references.encode(self.video_vae, self.audio_codec, device=dev)
            tokens = dit_tokens(*((h, w) if h else image_hw or (0, 0)), version=version)
            if refs is not None:  # the tails add tokens, and the reference guidance runs 4 rows per forward
                tokens += refs.video_frames * (h // 32) * (w // 32) + refs.audio_length
            with dit_on_device(self.model, dev, memory_mode=self.memory_mode, blocks_on_gpu=self.blocks_on_gpu,
                               tokens=tokens, rows=2 if refs is None else 4):
                lat = sample_av(
                    self.model, cond, height=h, width=w, version=version, settings=settings,
                    image_latent=image_latent, device=dev, dtype=self.dtype,
                    callback=callback, check_interrupt=check_interrupt, guides=encoded, references=refs,
                )
            with on_device(self.video_vae, dev, offload=off):
                frames, plan = decode_video(self.video_vae, lat.video, device=dev,
                                            dtype=next(self.video_vae.parameters()).dtype, return_plan=True)
            with on_device(self.audio_codec, dev, offload=off):
                wav = decode_audio(self.audio_codec, lat.audio, device=dev,
                                   dtype=next(self.audio_codec.parameters()).dtype)
        finally:
            if dev.type == "cuda":
                release_memory()
        frames, wav = splice_originals(guides, frames, wav, original=original_media)
        warnings = [*cond.warnings, *notes, *([plan.message()] if plan.tiled else [])]
        return GenerationResult(frames=frames, waveform=wav, sample_rate=SAMPLE_RATE, fps=lat.fps, latents=lat,
                                prompt=cond.prompt, warnings=warnings)

    @staticmethod
    def save(result: GenerationResult, path: str, *, wav: bool = False, weights: str | None = None) -> str:
        """Write the MP4 (H.264 + AAC) atomically; with ``wav`` also ``<path>.wav`` beside it.

        When writing fails (or is interrupted), the latents are kept beside ``path`` (or in the temp folder) and
        an :class:`ovi_core.io.latents.OutputWriteError` says how to decode them (``weights``: the weights
        folder to put in that command).
        """
        from ovi_core.io.latents import write_failed
        from ovi_core.io.media import write_mp4, write_wav

        try:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            write_mp4(path, result.frames, result.waveform, fps=result.fps, sample_rate=result.sample_rate)
            if wav:
                write_wav(os.path.splitext(path)[0] + ".wav", result.waveform, sample_rate=result.sample_rate)
        except Exception as e:
            raise write_failed(e, result.latents, path, weights=weights) from e
        except BaseException as e:  # Ctrl-C or SIGTERM while writing: keep the work, then stop
            write_failed(e, result.latents, path, weights=weights)
            raise
        return path
