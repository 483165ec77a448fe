"""Peak memory of ``generate --video FILE`` (the media sets the length) against the input's length, end to end.

    python bench/longclip_memory.py [--size 1920x1080] [--seconds 10 60] [--weights DIR] [--out bench/results/x.json]

Writes synthetic H.264 inputs of each length at the given size (24 fps, a moving gradient), then runs the whole
command -- read the file window by window, resize, VAE-encode, sample, decode, write the MP4 -- on tiny random
weights (``python -m ovi_core tiny-weights``), each in its own process, and reads that process's peak RSS
(``VmHWM``). The tiny model is small, so the numbers are what the pipeline around the model holds: decoded source
frames, the VAE's input, latents, the MP4 writer. Prints one JSON object (and writes it with ``--out``); exit
status 1 when the longest input peaks above ``--limit`` (default 1.2) times the shortest.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROMPT = "A street at dusk, cars pass. <AUDCAP>Traffic hum, passing cars.<ENDAUDCAP>"

RUN = r"""
import sys, time
sys.path.insert(0, {root!r})
from ovi_core.cli import main as cli
t = time.time()
rc = cli.main(["generate", "--weights", {weights!r}, "--prompt", {prompt!r}, "--steps", "1", "--offline",
               "--device", "cpu", "--video", {video!r}, "--out", {out!r}])
peak = [line for line in open("/proc/self/status") if line.startswith("VmHWM:")][0].split()[1]
print("RESULT", rc, peak, round(time.time() - t, 1))
"""


def write_input(path: str, seconds: float, width: int, height: int) -> None:
    """A synthetic H.264 clip: a diagonal gradient moving one pixel per frame (cheap to encode and decode)."""
    import av
    import numpy as np

    n = round(seconds * 24)
    x = np.arange(width, dtype=np.int32)[None, :] + np.arange(height, dtype=np.int32)[:, None]
    with av.open(path, "w") as c:
        s = c.add_stream("libx264", rate=24)
        s.width, s.height, s.pix_fmt = width, height, "yuv420p"
        s.options = {"preset": "ultrafast", "crf": "28"}
        for k in range(n):
            g = ((x + 4 * k) % 256).astype(np.uint8)
            img = np.stack([g, np.flip(g, 1), np.full_like(g, 96)], axis=-1)
            for pkt in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="1920x1080", help="input WxH (default 1920x1080)")
    ap.add_argument("--seconds", type=float, nargs="+", default=[10.0, 60.0], help="input lengths (default 10 60)")
    ap.add_argument("--weights", help="a weights folder (default: tiny random weights made in a temp folder)")
    ap.add_argument("--limit", type=float, default=1.2, help="allowed peak ratio, longest / shortest input")
    ap.add_argument("--out", help="also write the JSON result here")
    args = ap.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))
    result: dict = {"size": f"{width}x{height}", "runs": {}}
    with tempfile.TemporaryDirectory(prefix="ovi-mem-") as tmp:
        weights = args.weights
        if weights is None:
            weights = os.path.join(tmp, "weights")
            subprocess.run([sys.executable, "-m", "ovi_core", "tiny-weights", weights], cwd=ROOT, check=True,
                           capture_output=True)
        for seconds in sorted(args.seconds):
            video = os.path.join(tmp, f"in_{seconds:g}s.mp4")
            t = time.time()
            write_input(video, seconds, width, height)
            made = time.time() - t
            code = RUN.format(root=ROOT, weights=weights, prompt=PROMPT, video=video,
                              out=os.path.join(tmp, f"out_{seconds:g}s.mp4"))
            run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
            line = [ln for ln in run.stdout.splitlines() if ln.startswith("RESULT")]
            if run.returncode != 0 or not line:
                print(run.stderr[-3000:], file=sys.stderr)
                return 2
            _, rc, peak_kib, wall = line[-1].split()
            result["runs"][f"{seconds:g}"] = {"rc": int(rc), "peak_rss_mib": round(int(peak_kib) / 1024, 1),
                                              "wall_s": float(wall), "input_mb": round(os.path.getsize(video) / 1e6, 1),
                                              "input_write_s": round(made, 1)}
            os.remove(video)
    peaks = [r["peak_rss_mib"] for r in result["runs"].values()]
    result["ratio_longest_to_shortest"] = round(peaks[-1] / peaks[0], 3)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0 if result["ratio_longest_to_shortest"] <= args.limit else 1


if __name__ == "__main__":
    raise SystemExit(main())
