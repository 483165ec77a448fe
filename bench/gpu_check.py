"""One prepared device check of the CUDA paths (issue 22): random full-size weights, no download.

    python bench/gpu_check.py                 # CUDA at 704x704x121 with the 11.66 B DiT; < 5 min on an H100
    python bench/gpu_check.py --small         # the same code on CPU at a tiny config, in seconds (CI)
    python bench/gpu_check.py --only dit_gpu,vae_decode --json out.json

Sections (each in its own try/except, so one failure does not stop the others; a section that would start
after ``--budget`` seconds is skipped):

* ``env``: torch, GPU, compute capability and the pre-Ampere verdict, installed attention backends;
* ``dit_<mode>``: one CFG step (batched positive + negative rows, as the sampler runs it) of the fusion DiT
  in each memory mode of ``ovi_core.runtime.memory`` (``gpu``, ``offload``, ``block_swap`` with 10 and 0
  resident blocks): seconds per step, ``max_memory_allocated``/``reserved``, host syncs per forward
  (``torch.cuda.set_sync_debug_mode("warn")`` warnings counted) and host-to-device copies the code asked for
  (``ovi_core.runtime.transfers``; on CPU counted on a meta-device copy, which stands in for the GPU; block
  swap's non-blocking uploads from pinned memory are counted apart);
* ``attn_<backend>``: the same step with each installed attention kernel, after its load-time probe;
* ``fp8_linear``: the ``ffn.2`` matmul in fp8 (``torch._scaled_mm``, per-tensor and row-wise) against bf16
  ``F.linear``, and fp32 with a bias (the case the kernel refuses to fuse);
* ``dit_fp8`` / ``dit_q8_0``: the step with fp8 (upcast per layer, then fp8 compute) and GGUF Q8_0 weights;
* ``q6_k_linear``: syncs of one Linear call with a Q6_K weight;
* ``compile``: ``--compile`` over 2 steps: graphs, graph breaks, recompile-limit messages; ``compile_q8_0`` the
  same with Q8_0-packed block weights (compiled around the dequantize, :mod:`ovi_core.model.packed_compile`);
* ``rope``: RoPE on one video q, the eager complex multiply against the compiled real-arithmetic kernel (CUDA's
  default): seconds, peak memory, whether the bits agree;
* ``vae_decode``: the Wan2.2 VAE decode of the clip (the automatic plan) and a forced tiled decode;
* ``fp8_load``: a bf16 file (2 full-width fused blocks) loaded as fp8, converted on the CPU while reading, against
  bf16 loaded and converted on the device: device memory above the baseline, same weights.

Prints one JSON document and then a table (stdout); ``--json PATH`` also writes the JSON there.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import gc
import json
import logging
import os
import sys
import time
import traceback
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from gpu_check_parts import (  # noqa: E402  (bench/ is this script's folder)
    FULL,
    GIB,
    SMALL,
    pack,
    sec_fp8_load,
    sec_rope,
    table,
)
from torch import nn  # noqa: E402

from ovi_core.model.fusion import OviFusionModel, _fused_blocks  # noqa: E402
from ovi_core.quant import fp8_compute as fc  # noqa: E402
from ovi_core.quant import ggml  # noqa: E402
from ovi_core.quant.fp8 import to_scaled_fp8  # noqa: E402
from ovi_core.quant.tensor import QuantizedWeight  # noqa: E402
from ovi_core.runtime import attention as at  # noqa: E402
from ovi_core.runtime.devices import gpu_refusal  # noqa: E402
from ovi_core.runtime.memory import BlockSwapper, dit_on_device  # noqa: E402
from ovi_core.runtime.transfers import TransferCounter  # noqa: E402
from ovi_core.vae.wan_vae import WanVAE  # noqa: E402

SECTIONS = ("env", "dit_gpu", "attn", "dit_block_swap_10", "dit_block_swap_0", "dit_offload", "fp8_linear",
            "dit_fp8", "dit_q8_0", "q6_k_linear", "compile", "compile_q8_0", "rope", "vae_decode", "fp8_load")


class Check:
    """The state shared by the sections: device, sizes, the random DiT, the results."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.small = args.small
        self.dev = torch.device("cpu" if args.small else "cuda")
        self.dtype = torch.float32 if args.small else torch.bfloat16
        self.size = SMALL if args.small else FULL
        self.cuda = self.dev.type == "cuda"
        self.deadline = time.perf_counter() + args.budget
        self.args = args
        self.model: OviFusionModel | None = None
        self.ref_out: torch.Tensor | None = None
        self.results: dict[str, dict] = {}

    # -- helpers ------------------------------------------------------------------------------

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.dev)

    def reset_peak(self) -> None:
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.dev)

    def peak(self) -> dict:
        if not self.cuda:
            return {"max_allocated_gib": None, "max_reserved_gib": None}
        return {"max_allocated_gib": round(torch.cuda.max_memory_allocated(self.dev) / GIB, 3),
                "max_reserved_gib": round(torch.cuda.max_memory_reserved(self.dev) / GIB, 3)}

    def timed(self, fn, *, repeat: int = 1, warmup: int = 1) -> tuple[float, object]:
        out = None
        for _ in range(warmup):
            out = fn()
        self.sync()
        t0 = time.perf_counter()
        for _ in range(repeat):
            out = fn()
        self.sync()
        return (time.perf_counter() - t0) / repeat, out

    def syncs(self, fn) -> int | None:
        """Host syncs ``fn`` makes (CUDA sync debug mode warnings); None off CUDA."""
        if not self.cuda:
            return None
        self.sync()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                fn()
            finally:
                torch.cuda.set_sync_debug_mode("default")
        return sum("synchroniz" in str(w.message) for w in caught)

    def inputs(self, device: torch.device | None = None) -> tuple:
        device = device or self.dev
        s, c = self.size, self.size.cfg
        g = torch.Generator().manual_seed(0)
        f, h, w = s.latent
        video = torch.randn(2, c.video.in_dim, f, h, w, generator=g).to(device=device, dtype=self.dtype)
        audio = torch.randn(2, s.audio_len, c.audio.in_dim, generator=g).to(device=device, dtype=self.dtype)
        ctx = [torch.randn(s.text_rows, c.video.text_dim, generator=g).to(device=device, dtype=self.dtype)
               for _ in range(2)]
        t = torch.full((2,), 500.0, device=device)
        return video, audio, t, ctx

    def step_fn(self, model: nn.Module, device: torch.device | None = None):
        video, audio, t, ctx = self.inputs(device)
        slg = min(11, self.size.cfg.video.num_layers - 1)
        mask = torch.tensor([False, True])  # on the CPU, as the sampler passes it

        def step():
            with torch.no_grad(), model.cache_text_embeddings():
                return model(video, audio, t, ctx, ctx, slg_layer=slg, slg_mask=mask)
        return step

    def copies(self, model: nn.Module) -> tuple[int, int]:
        """Blocking and non-blocking-from-pinned host-to-device copies one forward asks for, after a first
        forward (which builds the RoPE tables). On CPU the forward runs on a meta-device copy of the model (the
        stand-in for a GPU)."""
        if not self.cuda:
            model = copy.deepcopy(model).to("meta")
        step = self.step_fn(model, None if self.cuda else torch.device("meta"))
        step()
        with TransferCounter() as c:
            step()
        return c.count, c.async_count

    def measure_step(self, model: nn.Module, *, compare: bool = True) -> dict:
        step = self.step_fn(model)
        self.reset_peak()
        sec, out = self.timed(step, repeat=self.args.repeat)
        copies, uploads = self.copies(model)
        res = {"sec_per_step": round(sec, 4), **self.peak(), "syncs_per_forward": self.syncs(step),
               "copies_per_forward": copies, "pinned_async_copies_per_forward": uploads}
        v = out[0].float()
        res["finite"] = bool(torch.isfinite(v).all())
        if compare and self.ref_out is not None:
            res["rel_diff_to_bf16_sdpa"] = round(float((v - self.ref_out).norm() / self.ref_out.norm()), 5)
        return res

    # -- the random DiT -----------------------------------------------------------------------

    def build(self) -> OviFusionModel:
        t0 = time.perf_counter()
        model = OviFusionModel(self.size.cfg, device="meta", dtype=self.dtype).to_empty(device=self.dev)
        g = torch.Generator(device=self.dev).manual_seed(0)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "norm" in name and p.ndim == 1:
                    p.fill_(1.0)
                else:
                    p.normal_(0.0, 0.02, generator=g)
        model.eval().requires_grad_(False)
        self.results.setdefault("env", {})["build_sec"] = round(time.perf_counter() - t0, 2)
        return model


@contextlib.contextmanager
def placed(chk: Check, model: nn.Module, mode: str, resident: int):
    """The model placed for sampling in memory ``mode``; on CPU block swap runs :class:`BlockSwapper` itself
    (``dit_on_device`` is a plain placement there), so the same hook code is exercised."""
    if chk.cuda or mode != "block_swap":
        with dit_on_device(model, chk.dev, memory_mode=mode, blocks_on_gpu=resident) as m:
            yield m
        return
    swapper = BlockSwapper(model, device=chk.dev, resident=resident)
    try:
        yield model
    finally:
        swapper.detach()


# ----------------------------------------------------------------------------------------------
# sections
# ----------------------------------------------------------------------------------------------


def sec_env(chk: Check) -> dict:
    cap = torch.cuda.get_device_capability(chk.dev) if chk.cuda else None
    out = {"torch": torch.__version__, "device": str(chk.dev), "dtype": str(chk.dtype).replace("torch.", ""),
           "gpu": torch.cuda.get_device_name(chk.dev) if chk.cuda else None, "capability": cap,
           "pre_ampere_refusal": gpu_refusal(cap, chk.dtype), "attention_installed": at.available_backends(),
           "has_scaled_mm": hasattr(torch, "_scaled_mm"), "fp8_compute_supported": fc.fp8_compute_supported(chk.dev),
           "config": "small (CPU)" if chk.small else "OVI_11B, 704x704x121 (15,004 video + 157 audio tokens), B=2"}
    chk.model = chk.build()
    return out


def sec_dit_gpu(chk: Check) -> dict:
    with placed(chk, chk.model, "gpu", 0) as m:
        m.attention_backend = "sdpa"
        res = chk.measure_step(m, compare=False)
        chk.ref_out = chk.step_fn(m)()[0].float()
    return res


def sec_attn(chk: Check) -> dict:
    out = {}
    c = chk.size.cfg.video
    for name in at.available_backends():
        if name == "sdpa":
            continue
        try:
            runs = at.probe_backend(name, chk.dev, chk.dtype, heads=c.num_heads, head_dim=c.dim // c.num_heads)
            res = {"probe": runs}
            if runs == name:
                with placed(chk, chk.model, "gpu", 0) as m:
                    m.attention_backend = name
                    res.update(chk.measure_step(m))
                    res["active_after_step"] = at.active_backend(name, chk.dev, chk.dtype)
            out[name] = res
        except Exception as e:  # noqa: BLE001
            out[name] = {"error": _err(e)}
        finally:
            chk.model.attention_backend = "sdpa"
    return out or {"note": "no kernel besides SDPA is installed"}


def _mode(chk: Check, mode: str, resident: int = 0) -> dict:
    chk.model.to("cpu")
    with placed(chk, chk.model, mode, resident) as m:
        res = chk.measure_step(m)
    res["mode"] = mode if mode != "block_swap" else f"block_swap, {resident} resident"
    return res


def sec_fp8_linear(chk: Check) -> dict:
    rows, k, n = chk.size.ffn
    g = torch.Generator().manual_seed(0)
    bf16 = torch.bfloat16  # the GPU compute dtype (row-wise scales need a bf16 output), also with --small
    x = torch.randn(rows, k, generator=g).to(chk.dev, bf16)
    w = (torch.randn(n, k, generator=g) * 0.02).to(chk.dev, bf16)
    bias = torch.randn(n, generator=g).to(chk.dev, bf16)
    w8, s = to_scaled_fp8(w)
    mm = None if chk.cuda and fc.fp8_compute_supported(chk.dev) else fc.scaled_mm_reference
    ref = F.linear(x, w, bias).float()
    out = {"shape": [rows, k, n], "kernel": "torch._scaled_mm" if mm is None else "scaled_mm_reference (CPU)"}
    chk.reset_peak()
    sec, _ = chk.timed(lambda: F.linear(x, w, bias), repeat=3)
    out["bf16_linear"] = {"sec": round(sec, 5), **chk.peak()}
    for rowwise in (False, True):
        key = "fp8_rowwise" if rowwise else "fp8_tensorwise"
        try:
            fn = functools.partial(fc._scaled_mm_linear, x, w8, fc.weight_scale(s, n, chk.dev, rowwise=rowwise),
                                   bias, rowwise=rowwise, mm=mm)
            chk.reset_peak()
            sec, y = chk.timed(fn, repeat=3)
            out[key] = {"sec": round(sec, 5), **chk.peak(),
                        "rel_err": round(float((y.float() - ref).norm() / ref.norm()), 4), "syncs": chk.syncs(fn)}
        except Exception as e:  # noqa: BLE001
            out[key] = {"error": _err(e)}
    try:  # fp32 compute with a bias: "Bias is not supported when out_dtype is set to Float32" unless added after
        x32 = x[:64].float()
        y = fc._scaled_mm_linear(x32, w8, fc.weight_scale(s, n, chk.dev, rowwise=False), bias.float(),
                                 rowwise=False, mm=mm)
        out["fp32_with_bias"] = {"ok": y.dtype == torch.float32 and bool(torch.isfinite(y).all())}
    except Exception as e:  # noqa: BLE001
        out["fp32_with_bias"] = {"error": _err(e)}
    return out


def sec_dit_packed(chk: Check, fmt: str) -> dict:
    chk.model.to(chk.dev)
    restore = pack(chk.model, fmt)
    try:
        res = {"upcast": chk.measure_step(chk.model)}
        if fmt == "fp8":
            emulate = not (chk.cuda and fc.fp8_compute_supported(chk.dev))
            n = fc.enable_fp8_compute(chk.model, emulate=emulate)
            try:
                res["fp8_compute"] = {"layers": n, "emulated": emulate, **chk.measure_step(chk.model)}
            finally:
                fc.disable_fp8_compute(chk.model)
    finally:
        restore()
    return res


def sec_q6_k_linear(chk: Check) -> dict:
    n = max(256, chk.size.cfg.video.dim)  # Q6_K blocks hold 256 values
    lin = nn.Linear(n, n, device=chk.dev, dtype=chk.dtype)
    w = lin.weight.detach()
    lin._parameters["weight"] = nn.Parameter(QuantizedWeight.from_ggml(ggml.quantize(w, ggml.Q6_K), ggml.Q6_K,
                                                                        w.shape), requires_grad=False)
    x = torch.randn(64, n, device=chk.dev, dtype=chk.dtype)
    with torch.no_grad():
        sec, _ = chk.timed(lambda: lin(x), repeat=3)
        lin_c, x_c = (lin, x) if chk.cuda else (copy.deepcopy(lin).to("meta"), x.to("meta"))
        with TransferCounter() as c:
            lin_c(x_c)
        return {"shape": [64, n, n], "sec": round(sec, 5), "syncs_per_call": chk.syncs(lambda: lin(x)),
                "copies_per_call": c.count}


def sec_compile(chk: Check, fmt: str | None = None) -> dict:
    """``--compile`` over 2 steps, on the model's own weights or (``fmt``) on packed ones."""
    import torch._dynamo as dynamo
    from torch._dynamo.utils import counters

    msgs: list[str] = []

    class Grab(logging.Handler):
        def emit(self, record):
            text = record.getMessage()
            if "recompile" in text.lower() or "cache_size_limit" in text:
                msgs.append(text[:300])

    handler = Grab()
    logging.getLogger("torch._dynamo").addHandler(handler)
    chk.model.to(chk.dev)
    restore = pack(chk.model, fmt) if fmt else (lambda: None)
    dynamo.reset()
    counters.clear()
    try:
        chk.model.compile(backend=chk.args.compile_backend, dynamic=False)
        step = chk.step_fn(chk.model)
        t0 = time.perf_counter()
        step()
        chk.sync()
        first = time.perf_counter() - t0
        graphs_1 = counters["stats"]["unique_graphs"]
        sec, _ = chk.timed(step, repeat=1, warmup=0)
        return {"backend": chk.args.compile_backend, "first_step_sec": round(first, 2), "second_step_sec": round(sec, 3),
                "unique_graphs_after_step_1": graphs_1, "unique_graphs_after_step_2": counters["stats"]["unique_graphs"],
                "graph_breaks": sum(counters["graph_break"].values()), "recompile_messages": msgs[:5],
                "recompile_limit_hit": any("limit" in m for m in msgs),
                "layers": chk.size.cfg.video.num_layers}
    finally:
        chk.model._blocks_fn = _fused_blocks  # back to eager
        restore()
        logging.getLogger("torch._dynamo").removeHandler(handler)
        dynamo.reset()


def sec_vae(chk: Check) -> dict:
    chk.model.to("cpu")
    if chk.cuda:
        torch.cuda.empty_cache()
    vae = WanVAE(chk.size.vae, device="meta", dtype=chk.dtype, compute_dtype=chk.dtype)
    vae = vae.to_empty(device=chk.dev).eval().requires_grad_(False)
    with torch.no_grad():
        for p in vae.parameters():
            if p.ndim > 1:
                nn.init.normal_(p, std=(1.0 / max(1, p[0].numel())) ** 0.5)
            else:
                p.fill_(1.0 if p.ndim == 1 else 0.0)
    f, h, w = chk.size.vae_latent
    z = torch.randn(1, 48, f, h, w, device=chk.dev, dtype=chk.dtype)
    out = {}
    for key, tile in (("auto", None), ("tiled", chk.size.vae_tile)):
        kw = {} if tile is None else {"tile_latent": tile, "tile_overlap": chk.size.vae_overlap}
        if key == "tiled" and time.perf_counter() > chk.deadline:
            out[key] = {"skipped": "time budget"}
            continue
        plan = vae.plan_decode(z.shape, **kw)
        chk.reset_peak()
        sec, y = chk.timed(lambda kw=kw: vae.decode(z, **kw), repeat=1, warmup=0)
        out[key] = {"sec": round(sec, 2), **chk.peak(), "tiles": plan.tiles, "frames": y.shape[2],
                    "plan_estimate_gib": round(plan.estimated_bytes / GIB, 3),
                    "dtype": str(y.dtype).replace("torch.", "")}
    return out


def _err(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"[:400]


RUNNERS = {
    "env": sec_env,
    "dit_gpu": sec_dit_gpu,
    "attn": sec_attn,
    "dit_block_swap_10": lambda c: _mode(c, "block_swap", min(10, c.size.cfg.video.num_layers // 2)),
    "dit_block_swap_0": lambda c: _mode(c, "block_swap", 0),
    "dit_offload": lambda c: _mode(c, "offload"),
    "fp8_linear": sec_fp8_linear,
    "dit_fp8": lambda c: sec_dit_packed(c, "fp8"),
    "dit_q8_0": lambda c: sec_dit_packed(c, "q8_0"),
    "q6_k_linear": sec_q6_k_linear,
    "compile": sec_compile,
    "compile_q8_0": lambda c: sec_compile(c, "q8_0"),
    "rope": sec_rope,
    "vae_decode": sec_vae,
    "fp8_load": sec_fp8_load,
}


def run(args: argparse.Namespace) -> dict:
    chk = Check(args)
    only = set(args.only.split(",")) if args.only else set(SECTIONS)
    t_start = time.perf_counter()
    for name in SECTIONS:
        if name not in only and name != "env":
            continue
        if name != "env" and time.perf_counter() > chk.deadline:
            chk.results[name] = {"skipped": f"time budget ({args.budget} s) spent"}
            continue
        t0 = time.perf_counter()
        try:
            res = RUNNERS[name](chk)
            chk.results[name] = {**chk.results.get(name, {}), **res, "status": "ok"}
        except Exception as e:  # noqa: BLE001 (one failure must not stop the others)
            chk.results[name] = {**chk.results.get(name, {}), "status": "error", "error": _err(e),
                                 "trace": traceback.format_exc(limit=6)[-1500:]}
        if chk.cuda and chk.results[name]["status"] == "error":  # the exception's frames are gone: free their memory
            gc.collect()
            torch.cuda.empty_cache()
        chk.results[name]["section_sec"] = round(time.perf_counter() - t0, 2)
    return {"small": args.small, "total_sec": round(time.perf_counter() - t_start, 1), "sections": chk.results}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--small", action="store_true", help="CPU, tiny config, seconds (what CI runs)")
    p.add_argument("--only", default="", help=f"comma-separated sections of {','.join(SECTIONS)}")
    p.add_argument("--budget", type=float, default=270.0, help="seconds after which no new section starts")
    p.add_argument("--repeat", type=int, default=1, help="timed steps per measurement (after one warm-up)")
    p.add_argument("--compile-backend", default="eager",
                   help="torch.compile backend of the compile section (eager: graph counts only, fast)")
    p.add_argument("--json", default=None, help="also write the JSON document to this path")
    args = p.parse_args(argv)
    unknown = set(filter(None, args.only.split(","))) - set(SECTIONS)
    if unknown:
        p.error(f"unknown sections {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
    if not args.small and not torch.cuda.is_available():
        print("CUDA is not available; run with --small for the CPU version.", file=sys.stderr)
        return 2
    threads = torch.get_num_threads()
    if args.small:
        torch.set_num_threads(1)  # tiny matmuls: one thread is faster than several on a shared machine
    try:
        doc = run(args)
    finally:
        torch.set_num_threads(threads)
    text = json.dumps(doc, indent=1, default=str)
    print(text)
    print()
    print(table(doc))
    if args.json:
        with open(args.json, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
