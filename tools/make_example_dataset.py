"""Write the tiny example training dataset ``examples/ovi_dataset/`` (two short clips with audio + captions).

    python tools/make_example_dataset.py [OUT_DIR]

Each clip is 64x64 at 24 fps, 5.2 s long (a little over one Ovi 1.0/1.1 clip: 121 frames and 5.024 s of
audio), a synthetic moving pattern with a sine tone, H.264 + AAC at low bit rates so each file stays a few
KB. Deterministic content; the encoders may change bytes between PyAV versions.
"""

from __future__ import annotations

import math
import os
import sys

import av
import numpy as np

SECONDS = 5.2
FPS = 24
SIDE = 64
SAMPLE_RATE = 16000
CLIPS = {
    "tone_a": (220.0, (40, 120, 200), "A slowly moving blue and orange pattern. <S>Hello from Ovi.<E> "
               "Audio: a steady low sine tone."),
    "tone_b": (440.0, (200, 60, 90), "A red pattern drifting to the right. <S>This is a test clip.<E> "
               "Audio: a steady high sine tone."),
}


def _frame(k: int, colour: tuple[int, int, int]) -> np.ndarray:
    y, x = np.mgrid[0:SIDE, 0:SIDE].astype(np.float32)
    wave = 0.5 + 0.5 * np.sin((x + 2.0 * k) / 10.0) * np.cos(y / 14.0)
    img = np.stack([c * wave + (255 - c) * (1 - wave) for c in colour], axis=-1)
    return img.clip(0, 255).astype(np.uint8)


def write_clip(path: str, freq: float, colour: tuple[int, int, int]) -> None:
    n_frames = round(SECONDS * FPS)
    n_samples = round(SECONDS * SAMPLE_RATE)
    with av.open(path, "w", format="mp4") as c:
        vs = c.add_stream("libx264", rate=FPS)
        vs.width = vs.height = SIDE
        vs.pix_fmt = "yuv420p"
        vs.options = {"crf": "40", "preset": "veryslow"}
        aus = c.add_stream("aac", rate=SAMPLE_RATE)
        aus.layout = "mono"
        aus.bit_rate = 12000
        for k in range(n_frames):
            for p in vs.encode(av.VideoFrame.from_ndarray(_frame(k, colour), format="rgb24")):
                c.mux(p)
        for p in vs.encode():
            c.mux(p)
        t = np.arange(n_samples) / SAMPLE_RATE
        wav = (0.3 * np.sin(2 * math.pi * freq * t) * 32767).astype(np.int16)
        for k in range(0, n_samples, 1024):
            f = av.AudioFrame.from_ndarray(wav[None, k:k + 1024], format="s16", layout="mono")
            f.sample_rate = SAMPLE_RATE
            for p in aus.encode(f):
                c.mux(p)
        for p in aus.encode():
            c.mux(p)


def main(out: str) -> None:
    os.makedirs(out, exist_ok=True)
    for name, (freq, colour, caption) in CLIPS.items():
        write_clip(os.path.join(out, name + ".mp4"), freq, colour)
        with open(os.path.join(out, name + ".txt"), "w", encoding="utf-8") as f:
            f.write(caption + "\n")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "examples",
                                                               "ovi_dataset"))
