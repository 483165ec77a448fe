"""Faster-sampling options against the dense 50-step run (issue #14), in one run.

    python bench/speed.py                    # CPU, mid config, a few minutes on 2 cores
    python bench/speed.py --device cuda --full   # the 11.66 B model at 704x704x121 (random weights)

For each option: DiT forwards per clip, wall-time and process-CPU-time ratios against the dense 50-step run
(CPU time is steadier than wall time when other processes share the cores), relative L2 of the
final video / audio latents and PSNR of the decoded frames against it. The DiT has random weights (and, on
CPU, is a narrow 4-block model); frames are decoded with the tiny random Wan2.2 VAE. See bench/RESULTS.md
for what such numbers can and cannot show. Writes ``bench/results/speed-<device>-<stamp>.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import torch  # noqa: E402


def _random_model(cfg, *, device, dtype, seed=0):
    from ovi_core.model.fusion import OviFusionModel

    torch.manual_seed(seed)
    with torch.device("meta"):
        model = OviFusionModel(cfg)
    model = model.to_empty(device=device).to(dtype)
    g = torch.Generator(device="cpu").manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("modulation"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)  # trained modulations are O(0.1)
            elif p.ndim >= 2:
                p.copy_(torch.randn(p.shape, generator=g) * (1.0 / p[0].numel()) ** 0.5)  # unit-gain layers
            elif name.endswith("weight"):
                p.fill_(1.0)
            else:
                p.zero_()
    return model.eval()


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of frames in [0, 1]."""
    mse = float(((a.float() - b.float()) ** 2).mean())
    return float("inf") if mse == 0 else 10 * torch.log10(torch.tensor(1.0 / mse)).item()


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-12))


def options() -> list[tuple[str, dict]]:
    """(label, sample_av keyword overrides)."""
    from ovi_core.sampling.cfg_cache import CFGReuse
    from ovi_core.sampling.fast import SpeedOptions, apply_preset
    from ovi_core.sampling.step_cache import StepCacheConfig

    fast = apply_preset("fast", seconds=5, steps=50, video_guidance_scale=4.0, audio_guidance_scale=3.0, shift=5.0)
    reuse = CFGReuse.uniform(0.3, 0.9, 5)
    return [
        ("dense 50 steps (reference)", {}),
        ("dense 25 steps (naive baseline)", {"steps": 25}),
        ("CFG reuse 0.3-0.9 / 5, delta", {"speed": SpeedOptions(cfg_reuse=reuse)}),
        ("CFG reuse 0.3-0.9 / 5, negative", {"speed": SpeedOptions(cfg_reuse=CFGReuse.uniform(0.3, 0.9, 5,
                                                                                              mode="negative"))}),
        ("step cache 0.1", {"speed": SpeedOptions(step_cache=StepCacheConfig(threshold=0.1))}),
        ("step cache 0.2", {"speed": SpeedOptions(step_cache=StepCacheConfig(threshold=0.2))}),
        ("CFG reuse 0.3-0.9 / 5 + step cache 0.1",
         {"speed": SpeedOptions(cfg_reuse=reuse, step_cache=StepCacheConfig(threshold=0.1))}),
        ("fast preset (6 steps, CFG 1, shift 6), no LoRA", fast),
    ]


def run(*, device: str, full: bool, threads: int | None, save=None) -> dict:
    from ovi_core.model.config import OVI_11B, TINY
    from ovi_core.pipeline import decode_video
    from ovi_core.sampling.av import sample_av
    from ovi_core.sampling.settings import SamplingSettings
    from ovi_core.text.conditioning import Conditioning
    from ovi_core.tiny import write_tiny_weights
    from ovi_core.vae.wan_vae import load_wan_vae

    dev = torch.device(device)
    if threads:
        torch.set_num_threads(threads)
    if full:
        cfg, dtype, hw, slg = OVI_11B, torch.bfloat16, 704, 11
        desc = "Ovi 11.66 B (random weights), bf16, 704x704x121 + 5 s audio"
    else:
        kw = dict(dim=128, ffn_dim=512, num_heads=2, num_layers=4, text_dim=64, freq_dim=256, text_len=64)
        cfg = dataclasses.replace(TINY, video=dataclasses.replace(TINY.video, **kw),
                                  audio=dataclasses.replace(TINY.audio, **kw))
        dtype, hw, slg = torch.float32, 128, 2
        desc = "mid: dim 128, 2 heads, 4 blocks, ffn 512 (random weights), fp32, 128x128x121 (496 video + 157 audio tokens)"
    model = _random_model(cfg, device=dev, dtype=dtype)
    g = torch.Generator().manual_seed(1)
    td = cfg.video.text_dim
    cond = Conditioning(positive=torch.randn(24, td, generator=g), video_negative=torch.randn(12, td, generator=g),
                        audio_negative=torch.randn(12, td, generator=g), prompt="bench")
    tmp = tempfile.mkdtemp()
    vae = load_wan_vae(write_tiny_weights(tmp)["wan-vae"], device=dev, dtype=torch.float32)
    base = dict(height=hw, width=hw, version="1.0", device=dev, dtype=dtype)

    rows, ref = [], None
    for label, over in options():
        kw = {**base, "settings": SamplingSettings(**{"steps": 50, "slg_layer": slg, "seed": 103, **over})}
        if device == "cuda":
            torch.cuda.synchronize()
        t0, c0 = time.perf_counter(), time.process_time()
        lat = sample_av(model, cond, **kw)
        if device == "cuda":
            torch.cuda.synchronize()
        sec, cpu = time.perf_counter() - t0, time.process_time() - c0
        frames = decode_video(vae, lat.video, device=dev)
        if ref is None:
            ref = (lat, frames, sec, cpu)
        row = {"option": label, "steps": kw["settings"].steps, "forwards": lat.stats.get("forwards"),
               "sec": round(sec, 3), "time_ratio": round(sec / ref[2], 3),
               "cpu_sec": round(cpu, 3), "cpu_time_ratio": round(cpu / ref[3], 3),
               "rel_l2_video": round(_rel(lat.video, ref[0].video), 5),
               "rel_l2_audio": round(_rel(lat.audio, ref[0].audio), 5),
               "psnr_frames_db": round(_psnr(frames, ref[1]), 2), "stats": lat.stats}
        rows.append(row)
        if save is not None:  # after every row, so that a cut-short run keeps what it measured
            save({"config": desc, "device": device, "dtype": str(dtype), "rows": rows})
        print(f"{label:48s} fwd {row['forwards']:6.1f}  t {row['time_ratio']:.3f}x cpu {row['cpu_time_ratio']:.3f}x  "
              f"relL2 v {row['rel_l2_video']:.4f} a {row['rel_l2_audio']:.4f}  PSNR {row['psnr_frames_db']:.2f} dB",
              file=sys.stderr, flush=True)
    return {"config": desc, "device": device, "dtype": str(dtype), "rows": rows}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--full", action="store_true", help="the full-size model at 704x704 (GPU)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "results"))
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("CUDA is not available on this machine; run with --device cpu.", file=sys.stderr)
        return 2
    from bench.run import machine_info

    if args.threads:
        torch.set_num_threads(args.threads)
    head = {"machine": machine_info(torch.device(args.device)), "suite": "speed"}
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"speed-{args.device}-{time.strftime('%Y%m%d-%H%M%S')}.json")

    def save(part: dict) -> None:
        with open(path, "w") as f:
            json.dump({**head, **part}, f, indent=1)

    run(device=args.device, full=args.full, threads=args.threads, save=save)
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
