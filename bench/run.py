"""Speed and memory benchmarks of ComfyUI-Ovi.

    python bench/run.py --device cpu            # 2-core friendly, a few minutes
    python bench/run.py --device cuda           # full-size 11.66 B model with random weights
    python bench/run.py --hotpath [--official DIR]   # the DiT hot path (#15) against the official code, CPU
    python bench/run.py --draft [--device cuda]      # a sampling step at a draft size against the trained size

Each run writes one JSON file into ``bench/results/`` (machine, torch version, device, config, numbers);
``bench/RESULTS.md`` keeps the table of the figures that matter.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import torch  # noqa: E402
from machine import machine_info  # noqa: E402  (bench/ is this script's folder)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn, *, device: torch.device, repeat: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    _sync(device)
    return (time.perf_counter() - t0) / repeat


# ----------------------------------------------------------------------------------------------
# pieces
# ----------------------------------------------------------------------------------------------


def bench_dit_step(cfg, *, video_shape, audio_len, device, dtype, repeat, batch_cfg=True, backend="auto") -> dict:
    """Seconds per sampling step (two guidance passes batched) of a randomly initialised fusion DiT."""
    from ovi_core.model.fusion import OviFusionModel

    torch.manual_seed(0)
    with torch.device("meta"):
        model = OviFusionModel(cfg)
    model = model.to_empty(device=device).to(dtype)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.02)
    model.eval()
    model.attention_backend = backend
    b = 2 if batch_cfg else 1
    f, h, w = video_shape
    video = torch.randn(b, 48, f, h, w, device=device, dtype=dtype)
    audio = torch.randn(b, audio_len, 20, device=device, dtype=dtype)
    t = torch.full((b,), 500.0, device=device)
    ctx = [torch.randn(min(100, cfg.video.text_len), cfg.video.text_dim, device=device, dtype=dtype) for _ in range(b)]
    mask = torch.tensor([False, True], device=device) if b == 2 else None

    def step():
        with torch.no_grad():
            if batch_cfg:
                model(video, audio, t, ctx, ctx, slg_layer=min(11, cfg.video.num_layers - 1), slg_mask=mask)
            else:
                model(video, audio, t, ctx, ctx)
                model(video, audio, t, ctx, ctx, slg_layer=min(11, cfg.video.num_layers - 1))

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sec = _time(step, device=device, repeat=repeat)
    out = {
        "video_tokens": f * (h // 2) * (w // 2),
        "audio_tokens": audio_len,
        "sec_per_step": sec,
        "params": sum(p.numel() for p in model.parameters()),
    }
    if device.type == "cuda":
        out["peak_vram_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return out


def bench_load_rss(cfg) -> dict:
    """Peak RSS while loading a fusion checkpoint in a fresh process, against the file's size."""
    from ovi_core.model.fusion import OviFusionModel
    from ovi_core.model.loader import save_fusion

    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "model.safetensors")
        torch.manual_seed(0)
        model = OviFusionModel(cfg, dtype=torch.bfloat16)
        save_fusion(model, path)
        del model
        size = os.path.getsize(path)
        code = (
            f"import sys, torch; sys.path.insert(0, {ROOT!r})\n"
            "from ovi_core.model.loader import load_fusion\n"
            "import ovi_core.model, safetensors.torch\n"
            "def kib(field):\n"
            "    for line in open('/proc/self/status'):\n"
            "        if line.startswith(field):\n"
            "            return int(line.split()[1])\n"
            "open('/proc/self/clear_refs', 'w').write('5')  # reset the peak (VmHWM) to the current RSS\n"
            "before = kib('VmRSS:')\n"
            f"m = load_fusion({path!r}, device='cpu', dtype=torch.bfloat16)\n"
            "print(before, kib('VmHWM:'))\n"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        before, after = (int(x) for x in out.stdout.split())
    return {"file_mib": size / 2**20, "peak_rss_growth_mib": (after - before) / 1024,
            "ratio_to_file": (after - before) * 1024 / size}


def bench_text(device) -> dict:
    from ovi_core.text.umt5 import load_text_encoder
    from ovi_core.tiny import write_tiny_weights

    with tempfile.TemporaryDirectory() as d:
        paths = write_tiny_weights(d)
        enc = load_text_encoder(paths["umt5"], tokenizer_path=paths["tokenizer"], device=device, dtype=torch.float32)
        prompt = "A woman says <S>Hello there, how are you today?<E> Audio: clear female voice, soft room tone."
        sec = _time(lambda: enc.encode([prompt, "jitter", "robotic"]), device=device, repeat=5)
    return {"config": "tiny UMT5 (dim 32, 2 layers), 3 prompts", "sec_per_call": sec}


def bench_vae_decode(device, *, frames_lat: int, hw_lat: int) -> dict:
    from ovi_core.tiny import write_tiny_weights
    from ovi_core.vae.wan_vae import load_wan_vae

    with tempfile.TemporaryDirectory() as d:
        paths = write_tiny_weights(d)
        vae = load_wan_vae(paths["wan-vae"], device=device, dtype=torch.float32)
        lat = torch.randn(1, 48, frames_lat, hw_lat, hw_lat, device=device)
        sec = _time(lambda: vae.decode(lat), device=device, repeat=1)
    n_frames = 1 + 4 * (frames_lat - 1)
    return {"config": f"tiny Wan2.2 VAE, latent {frames_lat}x{hw_lat}x{hw_lat} -> {n_frames} frames "
                      f"{hw_lat * 16}x{hw_lat * 16}", "sec_total": sec, "sec_per_frame": sec / n_frames}


def bench_pipeline_tiny(device, *, steps: int = 4) -> dict:
    """End to end on the tiny weight set: load, encode, sample, decode 121 frames + 5 s audio, write the MP4."""
    from ovi_core.pipeline import OviPipeline
    from ovi_core.tiny import write_tiny_weights

    with tempfile.TemporaryDirectory() as d:
        write_tiny_weights(d)
        t0 = time.perf_counter()
        pipe = OviPipeline.from_weights(d, device=device, download=False)
        t_load = time.perf_counter() - t0
        t0 = time.perf_counter()
        res = pipe.generate("A man says <S>Hello.<E> Audio: clear male voice.", steps=steps, seed=1)
        t_gen = time.perf_counter() - t0
        t0 = time.perf_counter()
        pipe.save(res, os.path.join(d, "out.mp4"))
        t_save = time.perf_counter() - t0
    return {"config": f"tiny weights, 64x64, 121 frames, {steps} steps", "load_sec": t_load,
            "generate_sec": t_gen, "mp4_write_sec": t_save}


# ----------------------------------------------------------------------------------------------
# suites
# ----------------------------------------------------------------------------------------------


def _mid_config():
    from ovi_core.model.config import TINY

    return dataclasses.replace(
        TINY,
        video=dataclasses.replace(TINY.video, dim=512, ffn_dim=2048, num_heads=4, num_layers=4, text_dim=256,
                                  freq_dim=256, text_len=512),
        audio=dataclasses.replace(TINY.audio, dim=512, ffn_dim=2048, num_heads=4, num_layers=4, text_dim=256,
                                  freq_dim=256, text_len=512),
    )


def cpu_suite(args) -> dict:
    from ovi_core.model.config import TINY

    dev = torch.device("cpu")
    mid = _mid_config()
    res = {"machine": machine_info(dev), "suite": "cpu", "results": {}}
    r = res["results"]
    r["dit_tiny"] = {"config": "TINY", **bench_dit_step(TINY, video_shape=(31, 8, 8), audio_len=157, device=dev,
                                                        dtype=torch.float32, repeat=5)}
    r["dit_mid"] = {"config": "dim 512, 4 heads, 4 blocks, ffn 2048, fp32",
                    **bench_dit_step(mid, video_shape=(31, 16, 16), audio_len=157, device=dev, dtype=torch.float32,
                                     repeat=2)}
    r["load_rss"] = {"config": "dim 512, 4 blocks, bf16 safetensors", **bench_load_rss(mid)}
    r["text_encode"] = bench_text(dev)
    r["vae_decode"] = bench_vae_decode(dev, frames_lat=4, hw_lat=8)
    r["pipeline_tiny"] = bench_pipeline_tiny(dev)
    return res


def cuda_suite(args) -> dict:
    from ovi_core.model.config import OVI_11B
    from ovi_core.runtime.attention import available_backends

    dev = torch.device("cuda")
    res = {"machine": machine_info(dev), "suite": "cuda", "results": {}}
    sizes = {"704x704x121": (31, 704 // 16, 704 // 16, 157), "960x960x241": (61, 60, 60, 314)}
    for backend in available_backends():
        for name, (f, h, w, la) in sizes.items():
            key = f"dit_{name}_{backend}"
            try:
                out = bench_dit_step(OVI_11B, video_shape=(f, h, w), audio_len=la, device=dev, dtype=torch.bfloat16,
                                     repeat=args.repeat, backend=backend)
                out["sampling_50_steps_sec"] = out["sec_per_step"] * 50
                res["results"][key] = out
            except torch.cuda.OutOfMemoryError as e:
                res["results"][key] = {"error": f"OOM: {e}"[:200]}
            torch.cuda.empty_cache()
    return res


def draft_suite(args) -> dict:
    """One sampling step at the trained size against a draft at half the sides (a quarter of the tokens).

    CUDA: the full-size 11.66 B model (random weights, bf16) at 1280x704 (the default) and 640x352 (the
    'draft 16:9' preset), 5 s. CPU: the mid config at latent 16x16 against 8x8 (the same 4x token ratio; the
    full model does not fit a 2-core CPU run).
    """
    dev = torch.device(args.device)
    res = {"machine": machine_info(dev), "suite": f"draft-{args.device}", "results": {}}
    if dev.type == "cuda":
        from ovi_core.model.config import OVI_11B

        cfg, dtype, shapes = OVI_11B, torch.bfloat16, {"trained 1280x704": (31, 44, 80), "draft 640x352": (31, 22, 40)}
    else:
        cfg, dtype, shapes = _mid_config(), torch.float32, {"trained (latent 16x16)": (31, 16, 16),
                                                           "draft (latent 8x8)": (31, 8, 8)}
    for name, shape in shapes.items():
        out = bench_dit_step(cfg, video_shape=shape, audio_len=157, device=dev, dtype=dtype, repeat=args.repeat)
        out["sampling_50_steps_sec"] = out["sec_per_step"] * 50
        res["results"][name] = out
    a, b = (res["results"][k]["sec_per_step"] for k in shapes)
    res["results"]["speedup"] = a / b
    return res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "results"))
    p.add_argument("--hotpath", action="store_true",
                   help="run only the fusion-DiT hot-path suite (bench/hotpath.py; CPU, mid config, ~3 min)")
    p.add_argument("--official", default=None, metavar="DIR",
                   help="folder holding an export of the official code (its ovi/ package), for --hotpath ratios")
    p.add_argument("--draft", action="store_true",
                   help="run only the draft-size comparison (a step at the trained size against half the sides)")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("CUDA is not available on this machine; run with --device cpu.", file=sys.stderr)
        return 2
    if args.official and not os.path.isfile(os.path.join(args.official, "ovi", "modules", "fusion.py")):
        print(f"--official {args.official}: no ovi/modules/fusion.py there; export the official code first.",
              file=sys.stderr)
        return 2
    if args.hotpath:
        from hotpath import hotpath_suite

        res, kind = hotpath_suite(args), "hotpath"
    elif args.draft:
        res, kind = draft_suite(args), f"draft-{args.device}"
    else:
        res, kind = (cpu_suite(args) if args.device == "cpu" else cuda_suite(args)), args.device
    os.makedirs(args.out, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = os.path.join(args.out, f"{kind}-{stamp}.json")
    with open(path, "w") as f:
        json.dump(res, f, indent=1)
    print(json.dumps(res, indent=1))
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
