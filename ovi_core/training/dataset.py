"""Training data: a folder of clips with captions -> cached latents and text embeddings on disk.

Source layout: ``clip.mp4`` (or ``.mov``/``.mkv``/``.webm``/``.avi``, with an audio track) next to
``clip.txt`` holding its caption in Ovi's prompt format (speech in ``<S>...<E>``, sound in
``Audio: ...`` or ``<AUDCAP>...<ENDAUDCAP>``).

Prepared layout (``prepare_dataset``)::

    OUT/index.json            settings, the clips kept and the clips skipped (with reasons)
    OUT/<name>.safetensors    video_latent [48, F, h, w], audio_latent [L, 20], text_embedding [Lt, D]

Each clip is cut to the model's duration (``frames`` at ``fps``; the frame rate is resampled), scaled to
cover and centre-cropped to the model's area (sides multiples of 32); its audio is the same span. A
clip that cannot be read, has no audio, no caption, or is too short is skipped and listed; it never
stops the run.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import torch
from torch.nn import functional as F

from ovi_core.io.files import atomic_path

logger = logging.getLogger(__name__)

VIDEO_EXTS = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v")
INDEX_FILE = "index.json"
AUDIO_HOP = 512  # 16 kHz samples per audio latent (mel hop 256 x VAE downsampling 2)
AUDIO_SR = 16000
AREA_SLACK = 1.1  # a fixed size may exceed the model's area by this factor (sides round to multiples of 32)
MAX_FPS = 120
# two 64x64 clips of 5.2 s with audio + captions, shipped with the repository (tools/make_example_dataset.py)
EXAMPLE_DATASET = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                               "examples", "ovi_dataset")


@dataclass(frozen=True)
class PrepareConfig:
    """Clip geometry. Defaults are the official 5 s model (121 frames at 24 fps, 157 audio latents,
    720x720 area); tests set small values (e.g. 9 frames at 64x64)."""

    frames: int = 121
    fps: float = 24.0
    area: int = 720 * 720
    height: int | None = None  # fixed size (multiples of 32); None: per clip, from its aspect at `area`
    width: int | None = None
    audio_tokens: int | None = None  # None: 157 for 121 frames, else round(seconds * 31.25)
    version: str = "1.0"  # caption format the model expects ('1.0': <AUDCAP>, '1.1': Audio:)

    def __post_init__(self) -> None:
        # every size is capped here, before any clip is decoded (a huge size would allocate per clip)
        from ovi_core import sizes

        spec = sizes.MODEL_SPECS.get(self.version)
        if spec is None:
            raise ValueError(f"Unknown model version {self.version!r}; use one of {sorted(sizes.MODEL_SPECS)}.")
        max_area = int(spec.area * AREA_SLACK)
        if not isinstance(self.frames, int) or self.frames < 1 or (self.frames - 1) % 4:
            raise ValueError(f"frames must be 4k+1 (the video VAE's temporal stride), got {self.frames}.")
        longest = max(sp.frames for sp in sizes.MODEL_SPECS.values())
        if self.frames > longest:
            raise ValueError(f"frames {self.frames} is longer than any Ovi model makes; use at most {longest} "
                             f"({longest / 24:.0f} s at 24 fps, the 10 s model).")
        if not (math.isfinite(self.fps) and 1 <= self.fps <= MAX_FPS):
            raise ValueError(f"fps must be between 1 and {MAX_FPS}, got {self.fps}.")
        if not isinstance(self.area, int) or not sizes.SIDE_MULTIPLE**2 <= self.area <= max_area:
            raise ValueError(f"area {self.area} must be between {sizes.SIDE_MULTIPLE**2} (32x32) and Ovi "
                             f"{spec.version}'s training area {spec.area} ({math.isqrt(spec.area)}^2) pixels.")
        for v in (self.height, self.width):
            if v is not None and (not isinstance(v, int) or v < 32 or v % 32 or v > sizes.MAX_SIDE):
                raise ValueError(f"height/width must be multiples of 32 between 32 and {sizes.MAX_SIDE}, got "
                                 f"{self.height}x{self.width}.")
        if (self.height is None) != (self.width is None):
            raise ValueError("Give both height and width, or neither (then the area decides).")
        if self.height is not None and self.height * self.width > max_area:
            raise ValueError(f"{self.height}x{self.width} is {self.height * self.width} pixels, more than Ovi "
                             f"{spec.version}'s training area {spec.area} ({math.isqrt(spec.area)}^2); pick a smaller "
                             "size (e.g. 704x1280 for 1.1, 544x960 for 1.0) or give only the area.")
        if self.audio_tokens is not None:
            most = math.ceil(self.seconds * AUDIO_SR / AUDIO_HOP) + 1
            if not isinstance(self.audio_tokens, int) or not 1 <= self.audio_tokens <= most:
                raise ValueError(f"audio_tokens must be between 1 and {most} for {self.frames} frames at {self.fps} "
                                 f"fps, got {self.audio_tokens}.")

    @property
    def seconds(self) -> float:
        return self.frames / self.fps

    @property
    def num_audio_tokens(self) -> int:
        if self.audio_tokens is not None:
            return int(self.audio_tokens)
        if self.frames == 121 and self.fps == 24:
            return 157
        if self.frames == 241 and self.fps == 24:
            return 314
        return max(1, round(self.seconds * AUDIO_SR / AUDIO_HOP))

    def audio_samples(self, sample_rate: int) -> int:
        """Samples at ``sample_rate`` that give :attr:`num_audio_tokens` latents (``L * 512`` at 16 kHz:
        157 latents need 5.024 s), rounded up; exact integer arithmetic."""
        return -(-self.num_audio_tokens * AUDIO_HOP * int(sample_rate) // AUDIO_SR)

    def size_for(self, height: int, width: int) -> tuple[int, int]:
        """Model size ``(h, w)`` for a source of ``height x width``: the fixed size, or the area at its aspect."""
        if self.height is not None:
            return self.height, self.width
        return snap_hw(height, width, area=self.area)


@dataclass
class PrepareReport:
    out_dir: str
    kept: list[str] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)


def snap_hw(h: int, w: int, *, area: int) -> tuple[int, int]:
    """Rescale ``(h, w)`` to ``area`` keeping the aspect ratio; round each side to a multiple of 32."""
    s = math.sqrt(area / float(h * w))
    return max(32, round(h * s / 32) * 32), max(32, round(w * s / 32) * 32)


def min_clip_seconds(config: PrepareConfig) -> float:
    """Shortest clip :func:`read_clip` keeps for ``config``: its video frames and the audio its latents need."""
    return max(config.frames / config.fps, config.audio_samples(AUDIO_SR) / AUDIO_SR)


def dataset_requirements(config: PrepareConfig | None = None) -> str:
    """What a folder of training clips must hold (for error messages and help), with the shipped example."""
    if config is None:
        length = "at least 5.04 s for Ovi 1.0/1.1 (121 frames at 24 fps), 10.04 s for Ovi 1.1-10s (241 frames)"
    else:
        length = f"at least {min_clip_seconds(config):.2f} s ({config.frames} frames at {config.fps:g} fps)"
    return (f"The folder must hold video clips ({', '.join(VIDEO_EXTS)}) with an audio track, each {length}: "
            "longer clips are cut, shorter ones are skipped. Next to each clip goes a same-name .txt caption in "
            "Ovi's prompt format (e.g. clip.mp4 + clip.txt: 'A man at a desk. <S>Hello there.<E> Audio: a quiet "
            f"office.'; speech in <S>...<E>, sound as 'Audio: ...' or <AUDCAP>...<ENDAUDCAP>). A ready example "
            f"with two clips: {EXAMPLE_DATASET}")


def find_clips(src_dir: str) -> list[str]:
    if not os.path.isdir(src_dir):
        raise FileNotFoundError(f"Dataset folder {src_dir!r} does not exist. {dataset_requirements()}")
    return sorted(os.path.join(src_dir, f) for f in os.listdir(src_dir) if f.lower().endswith(VIDEO_EXTS))


# ----------------------------------------------------------------------------------------------
# Reading one clip
# ----------------------------------------------------------------------------------------------


def cover_size(height: int, width: int, *, size: tuple[int, int]) -> tuple[int, int]:
    """The smallest ``(h, w)`` with the aspect of ``height x width`` that covers ``size`` (what
    :func:`frames_to_model` scales to before its centre crop)."""
    s = max(size[0] / height, size[1] / width)
    return max(size[0], round(height * s)), max(size[1], round(width * s))


def probe_size(path: str) -> tuple[int, int]:
    """``(height, width)`` of the clip's first video stream, from its header (nothing decoded)."""
    from ovi_core.io.media import open_media

    try:
        with open_media(path, "training clip") as container:
            streams = container.streams.video
            cc = streams[0].codec_context if streams else None
            h, w = (int(cc.height or 0), int(cc.width or 0)) if cc is not None else (0, 0)
    except Exception as e:  # noqa: BLE001 (PyAV raises many error types)
        raise ValueError(f"cannot open: {type(e).__name__}: {e}") from e
    if cc is None:
        raise ValueError("no video stream")
    if h <= 0 or w <= 0:
        raise ValueError(f"the video stream has no valid size ({h}x{w})")
    return h, w


def _to_rgb(frame, size: tuple[int, int] | None) -> torch.Tensor:
    """One decoded frame -> ``[H, W, 3]`` uint8, scaled down right away to cover ``size`` when larger (the
    filter of :func:`frames_to_model`, antialiased bicubic): only one frame ever exists at full size."""
    x = torch.from_numpy(frame.to_ndarray(format="rgb24"))  # [H, W, 3]
    if size is not None:
        h, w = x.shape[:2]
        ch, cw = cover_size(h, w, size=size)
        if ch < h and cw < w:
            y = F.interpolate(x.permute(2, 0, 1)[None].float(), size=(ch, cw), mode="bicubic", align_corners=False,
                              antialias=True)  # [1, 3, ch, cw]
            x = y[0].round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).contiguous()
    return x


def read_clip(path: str, *, frames: int, fps: float, audio_seconds: float | None = None,
              audio_latents: int | None = None,
              size: tuple[int, int] | None = None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """``frames`` frames at ``fps`` from the start of the clip ``[F, H, W, 3]`` uint8, and its audio ``[C, T]``
    float32 at its own sample rate: enough for ``audio_latents`` audio latents (``L * 512`` samples at 16 kHz,
    exact), or ``audio_seconds``. ``size`` ``(h, w)``: frames larger than needed to cover it are scaled down
    while decoding. ``ValueError`` when too short or without audio."""
    from ovi_core.io.media import open_media

    if (audio_seconds is None) == (audio_latents is None):
        raise ValueError("give audio_seconds or audio_latents")

    try:
        container = open_media(path, "training clip")
    except Exception as e:  # noqa: BLE001 (PyAV raises many error types)
        raise ValueError(f"cannot open: {type(e).__name__}: {e}") from e
    with container:
        if not container.streams.video:
            raise ValueError("no video stream")
        if not container.streams.audio:
            raise ValueError("no audio stream")
        vstream = container.streams.video[0]
        pics: list[tuple[float, torch.Tensor]] = []
        need_t = (frames - 1) / fps
        first_hw = None
        for frame in container.decode(vstream):
            t = float(frame.time) if frame.time is not None else len(pics) / float(vstream.average_rate or fps)
            hw = (int(frame.height), int(frame.width))
            first_hw = first_hw or hw
            if hw != first_hw:  # the size changes part-way: scale to the first frame's, so the frames stack
                frame = frame.reformat(width=first_hw[1], height=first_hw[0])
            pics.append((t, _to_rgb(frame, size)))
            if t >= need_t + 1.0 / fps:
                break
    if not pics:
        raise ValueError("no decodable video frames")
    times = torch.tensor([t for t, _ in pics], dtype=torch.float64)
    times = times - times[0]
    frame_dt = float(times[1] - times[0]) if len(pics) > 1 else 1.0 / fps
    if times[-1] + frame_dt < need_t + 1e-6 * fps:
        raise ValueError(f"too short: {float(times[-1] + frame_dt):.3f} s of video, need {need_t:.3f} s")
    idx = []
    for k in range(frames):
        tk = k / fps + 1e-6
        idx.append(int(torch.searchsorted(times, torch.tensor([tk], dtype=torch.float64), right=True).item()) - 1)
    video = torch.stack([pics[max(0, i)][1] for i in idx])  # [F, H, W, 3]

    with open_media(path, "training clip") as container:
        astream = container.streams.audio[0]
        sr = int(astream.rate or astream.codec_context.sample_rate)
        if audio_latents is not None:
            need = -(-int(audio_latents) * AUDIO_HOP * sr // AUDIO_SR)  # ceil, in integers
            audio_seconds = need / sr
        else:
            need = int(math.ceil(audio_seconds * sr))
        chunks, got = [], 0
        for frame in container.decode(astream):
            a = torch.from_numpy(frame.to_ndarray()).float()
            if frame.format.is_planar:
                a = a.reshape(len(frame.layout.channels), -1)  # [C, n]
            else:
                a = a.reshape(-1, len(frame.layout.channels)).t()  # [C, n] from interleaved samples
            if frame.format.name.startswith("s16"):
                a = a / 32768.0
            elif frame.format.name.startswith("s32"):
                a = a / 2147483648.0
            chunks.append(a)
            got += a.shape[1]
            if got >= need:
                break
    if not chunks:
        raise ValueError("no decodable audio")
    audio = torch.cat(chunks, dim=1)
    if audio.shape[1] < need:
        raise ValueError(f"too short: {audio.shape[1] / sr:.3f} s of audio, need {audio_seconds:.3f} s")
    return video, audio[:, :need].contiguous(), sr


def frames_to_model(video: torch.Tensor, *, height: int, width: int) -> torch.Tensor:
    """``[F, H, W, 3]`` uint8 -> ``[1, 3, F, height, width]`` in [-1, 1]: scale to cover, centre crop."""
    x = video.permute(0, 3, 1, 2).float() / 127.5 - 1.0  # [F, 3, H, W]
    h, w = x.shape[-2:]
    nh, nw = cover_size(h, w, size=(height, width))
    if (nh, nw) != (h, w):  # frames scaled at decode already have the cover size: crop only
        x = F.interpolate(x, size=(nh, nw), mode="bicubic", align_corners=False, antialias=True)
    top, left = (nh - height) // 2, (nw - width) // 2
    x = x[:, :, top:top + height, left:left + width].clamp(-1, 1)
    return x.permute(1, 0, 2, 3).unsqueeze(0).contiguous()  # [1, 3, F, H, W]


def _convert_caption(text: str, version: str) -> str:
    try:
        from ovi_core.text.prompt import convert_prompt
    except ImportError:  # the prompt helpers are optional here
        return text
    return convert_prompt(text, version="1.0" if version.startswith("1.0") else "1.1")


# ----------------------------------------------------------------------------------------------
# Preparing a folder
# ----------------------------------------------------------------------------------------------


def _atomic_json(path: str, obj) -> None:
    with atomic_path(path, suffix=".json") as tmp, open(tmp, "w") as f:
        json.dump(obj, f, indent=1)


@torch.no_grad()
def prepare_dataset(
    src_dir: str,
    out_dir: str,
    *,
    video_vae,
    audio_codec,
    text_encoder,
    config: PrepareConfig = PrepareConfig(),
    device: torch.device | str = "cpu",
    progress: Callable[[int, int], None] | None = None,
) -> PrepareReport:
    """Encode every clip of ``src_dir`` into ``out_dir`` (see the module docstring).

    ``video_vae.encode([1, 3, F, H, W] in [-1, 1]) -> [1, 48, F', h, w]``;
    ``audio_codec.encode(waveform [1, C, T], sample_rate) -> [1, L, 20]``;
    ``text_encoder.encode([caption]) -> [[Lt, D]]``.
    """
    from safetensors.torch import save_file

    device = torch.device(device)
    os.makedirs(out_dir, exist_ok=True)
    clips = find_clips(src_dir)
    report = PrepareReport(out_dir=out_dir)
    items = []
    n_audio = config.num_audio_tokens
    vae_dtype = next(video_vae.parameters()).dtype if hasattr(video_vae, "parameters") else torch.float32
    for i, path in enumerate(clips):
        name = os.path.splitext(os.path.basename(path))[0]
        try:
            cap_path = os.path.splitext(path)[0] + ".txt"
            if not os.path.isfile(cap_path):
                raise ValueError(f"no caption file {os.path.basename(cap_path)}")
            with open(cap_path, encoding="utf-8") as f:
                caption = f.read().strip()
            if not caption:
                raise ValueError("empty caption")
            caption = _convert_caption(caption, config.version)
            h, w = config.size_for(*probe_size(path))
            # audio: exactly what the latents need (157 latents: 157 * 512 samples at 16 kHz = 5.024 s)
            video, audio, sr = read_clip(path, frames=config.frames, fps=config.fps, audio_latents=n_audio,
                                         size=(h, w))
            pixels = frames_to_model(video, height=h, width=w)
            vlat = video_vae.encode(pixels.to(device=device, dtype=vae_dtype))  # [1, 48, F', h/16, w/16]
            alat = audio_codec.encode(audio[None].to(device), sr)  # [1, L, 20]
            if alat.shape[1] < n_audio:
                raise ValueError(f"too short: audio gives {alat.shape[1]} latents, need {n_audio}")
            alat = alat[:, :n_audio]
            text = text_encoder.encode([caption])[0]  # [Lt, D]
            tensors = {
                "video_latent": vlat[0].float().cpu().contiguous(),
                "audio_latent": alat[0].float().cpu().contiguous(),
                "text_embedding": text.float().cpu().contiguous(),
            }
            file = name + ".safetensors"
            with atomic_path(os.path.join(out_dir, file), suffix=".safetensors") as tmp:
                save_file(tensors, tmp, metadata={"caption": caption, "source": os.path.basename(path)})
            items.append({"name": name, "file": file, "caption": caption, "source": os.path.basename(path),
                          "video_shape": list(tensors["video_latent"].shape),
                          "audio_shape": list(tensors["audio_latent"].shape)})
            report.kept.append(name)
        except (ValueError, RuntimeError, OSError) as e:
            logger.warning("skipping %s: %s", os.path.basename(path), e)
            report.skipped.append({"file": os.path.basename(path), "reason": str(e)})
        if progress is not None:
            progress(i + 1, len(clips))
    _atomic_json(os.path.join(out_dir, INDEX_FILE), {
        "format": 1, "config": asdict(config), "audio_tokens": n_audio, "items": items, "skipped": report.skipped,
    })
    logger.info("prepared %d clips, skipped %d -> %s", len(report.kept), len(report.skipped), out_dir)
    return report


def prepare_from_weights(src_dir: str, out_dir: str, *, weights: str, config: PrepareConfig = PrepareConfig(),
                         device: str = "auto", progress: Callable[[int, int], None] | None = None) -> PrepareReport:
    """Load the text encoder and the two codecs from an official weights folder, then :func:`prepare_dataset`."""
    from ovi_core.audio.codec import load_audio_codec
    from ovi_core.io.weights import resolve_weights
    from ovi_core.runtime.devices import pick_device, pick_dtype
    from ovi_core.text.umt5 import load_text_encoder
    from ovi_core.vae.wan_vae import load_wan_vae

    clips = find_clips(src_dir)  # checked before any weights load
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ValueError(f"Output {out_dir!r} is a file; give a folder for the prepared dataset.")
    if not clips:
        raise ValueError(f"No clips in {src_dir!r}. {dataset_requirements(config)}")
    paths = resolve_weights(weights, version=config.version if config.version != "auto" else "auto")
    dev = pick_device(device)
    dt = pick_dtype(None, dev)
    text = load_text_encoder(paths.umt5, tokenizer_path=paths.tokenizer, device=dev, dtype=dt)
    vae = load_wan_vae(paths.wan_vae, device=dev, dtype=torch.float32 if dev.type == "cpu" else dt)
    codec = load_audio_codec(paths.mmaudio_vae, paths.bigvgan, device=dev, dtype=torch.float32)
    return prepare_dataset(src_dir, out_dir, video_vae=vae, audio_codec=codec, text_encoder=text, config=config,
                           device=dev, progress=progress)


# ----------------------------------------------------------------------------------------------
# Reading prepared data
# ----------------------------------------------------------------------------------------------


class LatentDataset:
    """The prepared clips: ``ds[i] -> {'video': [48, F, h, w], 'audio': [L, 20], 'text': [Lt, D], 'name'}``."""

    def __init__(self, root: str, *, preload: bool = True) -> None:
        from ovi_core.io import checkpoints as ck

        index = os.path.join(root, INDEX_FILE)
        if not os.path.isfile(index):
            raise FileNotFoundError(f"{index} not found: prepare the dataset first "
                                    "(python -m ovi_core prepare-dataset CLIPS_DIR OUT_DIR --weights W).")
        self.index = ck.read_json_file(index, what="Dataset index")
        self.root = root
        self.items: list[dict] = _checked_items(self.index.get("items", []), index)
        skipped = self.index.get("skipped", [])
        self.skipped: list[dict] = [x for x in skipped if isinstance(x, dict)] if isinstance(skipped, list) else []
        if not self.items:
            reasons = "; ".join(f"{s.get('file')}: {s.get('reason')}" for s in self.skipped[:5])
            raise ValueError(f"The prepared dataset {root!r} holds no usable clips ({reasons or 'folder was empty'}).")
        self._cache: dict[int, dict] = {}
        if preload:
            for i in range(len(self.items)):
                self._cache[i] = self._read(i)

    def __len__(self) -> int:
        return len(self.items)

    def _read(self, i: int) -> dict:
        from ovi_core.io import checkpoints as ck

        it = self.items[i]
        path = os.path.join(self.root, it["file"])
        t, _ = ck.read_tensor_file(path, what="Prepared clip", required=LATENT_KEYS)
        v, a, x = t["video_latent"], t["audio_latent"], t["text_embedding"]
        if v.dim() != 4 or v.shape[0] != 48 or a.dim() != 2 or a.shape[1] != 20 or x.dim() != 2 or x.shape[0] < 1:
            raise ck.CheckpointError(
                f"Prepared clip {path!r} has video_latent {list(v.shape)}, audio_latent {list(a.shape)}, "
                f"text_embedding {list(x.shape)}; expected [48, F, h, w], [L, 20] and [Lt, D]. Prepare the dataset "
                "again.")
        if not (v.is_floating_point() and a.is_floating_point() and x.is_floating_point()):
            raise ck.CheckpointError(f"Prepared clip {path!r} holds non-float latents; prepare the dataset again.")
        return {"video": v, "audio": a, "text": x, "name": it["name"]}

    def __getitem__(self, i: int) -> dict:
        if i in self._cache:
            return self._cache[i]
        return self._read(i)


LATENT_KEYS = ("video_latent", "audio_latent", "text_embedding")


def _checked_items(items, index: str) -> list[dict]:
    """The ``items`` of an index, each ``{"name": str, "file": plain file name in the dataset folder}``."""
    from ovi_core.io import checkpoints as ck

    if not isinstance(items, list):
        raise ck.CheckpointError(f"Dataset index {index!r}: 'items' is not a list; prepare the dataset again.")
    out = []
    for n, it in enumerate(items):
        file = it.get("file") if isinstance(it, dict) else None
        if (not isinstance(file, str) or not file or os.path.basename(file) != file or file.startswith(".")
                or not isinstance(it.get("name", ""), str)):
            raise ck.CheckpointError(f"Dataset index {index!r}: item {n} ({json.dumps(it)[:80]}) must be an object "
                                     "with a 'file' (a file name in the dataset folder) and a 'name'; prepare the "
                                     "dataset again.")
        out.append({**it, "name": it.get("name") or os.path.splitext(file)[0]})
    return out


def collate(samples: Sequence[dict]) -> dict:
    """Stack latents (equal shapes required within a batch); text stays a list of ``[Lt, D]``."""
    shapes = {tuple(s["video"].shape) for s in samples} | {("a",) + tuple(s["audio"].shape) for s in samples}
    if len(shapes) > 2:
        raise ValueError("Clips in one batch differ in size; use batch_size 1 or prepare with a fixed height/width.")
    return {
        "video": torch.stack([s["video"] for s in samples]),
        "audio": torch.stack([s["audio"] for s in samples]),
        "text": [s["text"] for s in samples],
        "names": [s["name"] for s in samples],
    }
