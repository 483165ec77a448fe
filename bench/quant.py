"""Benchmarks of the reduced-precision fusion files (issue #12) and of the per-tensor cast on load (#14.7).

    python bench/quant.py            # CPU, mid config, ~2 minutes on 2 cores (quiet machine)
    python bench/quant.py --formats q6_k q4_k --no-memory --repeat 1 --tag kq   # only the rel-L2 of two formats

For a bf16 source file at the mid config (dim 512, 4 heads, 4 blocks, ffn 2048) and each format
(fp8, fp8_scaled, q8_0, q6_k, q4_k): file size; peak RSS growth of loading it in a fresh process (reset
high-water mark), against the file; peak RSS of the streamed ``quantize``; seconds per DiT forward (fp32
compute on CPU) against the bf16 file; rel-L2 deviation of the output against the bf16 file. Also: loading
the bf16 file for fp32 compute, the previous way (whole file, then cast) against the per-tensor cast, and
the full-size (11.66 B) file size per format, computed from the shapes. Writes ``bench/results/quant-*.json``
(``quant-cpu-DATE-TAG.json`` with ``--tag``). ``--no-memory`` skips the peak-RSS subprocesses and the
fp32-from-bf16 load comparison; ``--repeat`` sets the timed forwards per format (after one warm-up).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import torch  # noqa: E402

FORMATS = ("fp8", "fp8_scaled", "q8_0", "q6_k", "q4_k")

_PEAK = (
    "import sys, torch; sys.path.insert(0, {root!r})\n"
    "{imports}\n"
    "def kib(field):\n"
    "    for line in open('/proc/self/status'):\n"
    "        if line.startswith(field):\n"
    "            return int(line.split()[1])\n"
    "open('/proc/self/clear_refs', 'w').write('5')\n"
    "before = kib('VmRSS:')\n"
    "{body}\n"
    "print(before, kib('VmHWM:'))\n"
)


def peak_growth_mib(imports: str, body: str) -> float:
    code = _PEAK.format(root=ROOT, imports=imports, body=body)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"measurement failed:\n{out.stderr[-2000:]}")
    before, after = (int(x) for x in out.stdout.split()[-2:])
    return (after - before) / 1024


def mid_config():
    from ovi_core.model.config import TINY

    v = dataclasses.replace(TINY.video, dim=512, ffn_dim=2048, num_heads=4, num_layers=4, freq_dim=256,
                            text_dim=4096, text_len=512)
    a = dataclasses.replace(TINY.audio, dim=512, ffn_dim=2048, num_heads=4, num_layers=4, freq_dim=256,
                            text_dim=4096, text_len=512)
    return dataclasses.replace(TINY, video=v, audio=a)


def full_size_bytes() -> dict:
    """Bytes of the official 11.66 B model per format, from the shapes and the quantization policy."""
    from ovi_core.model.loader import full_size_shapes
    from ovi_core.quant import ggml
    from ovi_core.quant.policy import gguf_type, quantizable

    shapes = {k: tuple(v) for k, v in full_size_shapes().items()}
    out = {"bf16": sum(math.prod(s) * 2 for s in shapes.values())}
    out["fp8"] = sum(math.prod(s) * (2 if ("norm" in k or "bias" in k) else 1) for k, s in shapes.items())
    out["fp8_scaled"] = sum(math.prod(s) * (1 if quantizable(k, s) else 2) + (4 if quantizable(k, s) else 0)
                            for k, s in shapes.items())
    for fmt, q in (("q8_0", ggml.Q8_0), ("q6_k", ggml.Q6_K), ("q4_k", ggml.Q4_K)):
        out[fmt] = sum(ggml.nbytes(s if len(s) <= 4 else (s[0], math.prod(s[1:])), gguf_type(k, s, torch.bfloat16, q))
                       for k, s in shapes.items())
    blocks = sum(math.prod(s) for k, s in shapes.items() if ".blocks." in k)
    return {"bytes": out, "params": sum(math.prod(s) for s in shapes.values()), "block_params": blocks,
            "num_blocks": 30}


def _save(res: dict, tag: str | None = None) -> None:
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    stem = f"quant-cpu-{datetime.date.today().isoformat()}" + (f"-{tag}" if tag else "")
    name = os.path.join(ROOT, "bench", "results", stem + ".json")
    with open(name, "w") as f:
        json.dump(res, f, indent=1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Sizes, memory, speed and error of the quantized fusion formats (CPU).")
    ap.add_argument("--formats", nargs="+", choices=FORMATS, default=list(FORMATS))
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-RSS measurements (subprocesses)")
    ap.add_argument("--repeat", type=int, default=2, help="timed forwards per format, after one warm-up")
    ap.add_argument("--tag", default=None, help="suffix of the results file name")
    args = ap.parse_args(argv)
    if args.repeat < 1:
        ap.error("--repeat must be at least 1")
    from ovi_core.model.loader import load_fusion, random_fusion, save_fusion
    from ovi_core.quant.convert import quantize_file

    def save(r):
        _save(r, args.tag)

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    cfg = mid_config()
    res: dict = {"machine": {"torch": torch.__version__, "cpu_count": os.cpu_count(),
                             "threads": torch.get_num_threads(), "load_avg_1min": os.getloadavg()[0],
                             "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")},
                 "config": "dim 512, 4 heads, 4 blocks, ffn 2048, text_dim 4096; inputs 31x16x16 video latents "
                           "(1984 tokens), 157 audio latents, 100 text tokens; fp32 compute, batch 1"}
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "model.safetensors")
        save_fusion(random_fusion(cfg, seed=0, std=0.02), src, dtype=torch.bfloat16)
        size_src = os.path.getsize(src)
        imp = "from ovi_core.model.loader import load_fusion\nimport ovi_core.quant.convert"
        cfg_arg = "import dataclasses\nfrom bench.quant import mid_config\ncfg = mid_config()"
        # 14.7: bf16 file -> fp32 model, the previous way vs tensor by tensor
        old = ("from ovi_core import checkpoints as ck\nfrom ovi_core.model.fusion import OviFusionModel\n"
               f"raw = ck.load_state_dict({src!r})\n"
               "sd = {k: raw.pop(k).to(torch.float32) for k in list(raw)}\n"
               "m = OviFusionModel(cfg, device='meta'); ck.load_strict(m, sd, path='x', what='x')")
        res["fp32_from_bf16"] = {} if args.no_memory else {
            "file_mib": size_src / 2**20,
            "before_whole_file_then_cast_mib": peak_growth_mib(imp + "\n" + cfg_arg, old),
            "now_per_tensor_cast_mib": peak_growth_mib(
                imp + "\n" + cfg_arg, f"m = load_fusion({src!r}, dtype=torch.float32, config=cfg)"),
            "bf16_load_mib": peak_growth_mib(imp + "\n" + cfg_arg,
                                             f"m = load_fusion({src!r}, dtype=torch.bfloat16, config=cfg)"),
        }
        for k in ("before_whole_file_then_cast_mib", "now_per_tensor_cast_mib", "bf16_load_mib"):
            if k in res["fp32_from_bf16"]:
                res["fp32_from_bf16"][k.replace("_mib", "_ratio")] = res["fp32_from_bf16"][k] * 2**20 / size_src

        g = torch.Generator().manual_seed(0)
        video = torch.randn(1, 48, 31, 16, 16, generator=g)
        audio = torch.randn(1, 157, 20, generator=g)
        t = torch.tensor([500.0])
        ctx = [torch.randn(100, 4096, generator=g)]

        def run(model, repeat=args.repeat):
            with torch.no_grad():
                out = model(video, audio, t, ctx, ctx)
                t0 = time.perf_counter()
                for _ in range(repeat):
                    out = model(video, audio, t, ctx, ctx)
                return (time.perf_counter() - t0) / repeat, out

        ref_model = load_fusion(src, dtype=torch.float32, config=cfg)
        sec_ref, (rv, ra) = run(ref_model)
        del ref_model
        res["bf16"] = {"file_mib": size_src / 2**20, "sec_per_forward": sec_ref}
        save(res)
        largest = max(p.numel() for p in random_fusion(cfg).parameters())
        res["largest_tensor_mib_fp32"] = largest * 4 / 2**20
        for fmt in args.formats:
            out = os.path.join(d, "m." + ("gguf" if fmt.startswith("q") else "safetensors"))
            t0 = time.perf_counter()
            rep = quantize_file(src, out, format=fmt)
            sec_quantize = time.perf_counter() - t0
            q_peak = load_peak = None
            if not args.no_memory:
                out2 = out.replace("m.", "m2.")
                q_peak = peak_growth_mib(imp, f"ovi_core.quant.convert.quantize_file({src!r}, {out2!r}, "
                                              f"format={fmt!r})")
                os.remove(out2)
                load_peak = peak_growth_mib(imp + "\n" + cfg_arg,
                                            f"m = load_fusion({out!r}, dtype=torch.float32, config=cfg)")
            size = os.path.getsize(out)
            model = load_fusion(out, dtype=torch.float32, config=cfg)
            sec, (qv, qa) = run(model)
            res[fmt] = {
                "file_mib": size / 2**20, "size_vs_bf16": size / size_src, "quantized_tensors": rep["quantized"],
                "quantize_sec": sec_quantize, "quantize_peak_rss_mib": q_peak,
                "load_peak_rss_mib_fp32_compute": load_peak,
                "load_peak_vs_file": None if load_peak is None else load_peak * 2**20 / size,
                "sec_per_forward": sec, "time_vs_bf16": sec / sec_ref,
                "rel_l2_video": float((qv - rv).norm() / rv.norm()), "rel_l2_audio": float((qa - ra).norm() / ra.norm()),
            }
            del model
            os.remove(out)
            save(res)
    res["full_size"] = full_size_bytes()
    save(res)
    json.dump(res, sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
