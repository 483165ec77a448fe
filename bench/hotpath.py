"""Hot-path benchmark of the fusion DiT (#15): each item of the issue as a number, in one run.

    python bench/run.py --hotpath --official /work/ovi-official     # about 3 minutes on 2 CPU cores

At the mid config (dim 1536, head_dim 128, 4 blocks, ffn 7168, text_dim 4096, text_len 512, bf16) and at
496 and 1984 video tokens (+157 audio tokens):

* forward and step ratios against the official ``FusionModel`` (same weights, same process, interleaved);
  a step is one CFG step: ours one batched pass of 2 rows with skip-layer guidance on the negative row and the
  run's text caches warm (also as two 1-row passes, ``batch_cfg=False``); the official two passes, the
  negative one skipping the layer (its sampler's order);
* item 1: RoPE's share of our forward, and the time per call of ours (the CPU's chunked path and the one
  multiply of the GPU/autograd path), the old real-arithmetic rotation and the official ``rope_apply`` on the
  same tensor;
* item 2: the step time saved by skip-layer guidance, ours and the official's;
* items 3-4: text-cache hits and misses (contexts, keys/values), and the entries after 5 sampling steps with
  tensor contexts in this tree and in the tree before the fix;
* item 5: peak memory (RSS growth) of one image->AV CFG step (2 rows) at 1984 tokens, before and after item 5,
  each in a fresh process from a temporary export of that revision (mid config with 1 fused block: the peak
  of a no-grad step is one block's);
* item 6: ``F.rms_norm`` against our RMSNorm (time and bit-identity).

Without ``--official`` the comparisons with the official code are skipped with a note.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# revisions for item 5: the commit before the per-token masks, and the masks alone (before the k/v cache)
MEM_REVS = {"before item 5": "0909d78^", "after item 5": "0909d78"}
SLG = 3
GRIDS = {496: (31, 4, 4), 1984: (31, 8, 8)}  # token grids (F, H/2, W/2) of 121 frames at 128² and 256²


def mid_config():
    from ovi_core.model.config import TINY

    kw = dict(dim=1536, ffn_dim=7168, num_heads=12, num_layers=4, text_dim=4096, freq_dim=256, text_len=512)
    return dataclasses.replace(TINY, video=dataclasses.replace(TINY.video, **kw),
                               audio=dataclasses.replace(TINY.audio, **kw))


def random_model(cfg, dtype=torch.bfloat16):
    from ovi_core.model.fusion import OviFusionModel

    torch.manual_seed(0)
    with torch.device("meta"):
        model = OviFusionModel(cfg)
    model = model.to_empty(device="cpu").to(dtype)
    # N(0, 0.02) weights (norm weights 1 + N(0, 0.02)), tiled from one seeded draw: drawing 0.5 G values one
    # by one takes minutes on 2 cores and timing does not care
    noise = (torch.randn(1 << 22, generator=torch.Generator().manual_seed(0)) * 0.02).to(dtype)
    with torch.no_grad():
        for k, (name, p) in enumerate(model.named_parameters()):
            flat = p.view(-1)
            start = (k * 7919) % noise.numel()
            for o in range(0, flat.numel(), noise.numel() - start):
                n = min(flat.numel() - o, noise.numel() - start)
                flat[o : o + n] = noise[start : start + n]
            if "norm" in name and name.endswith("weight"):
                p.add_(1.0)
    return model.eval()


WALL: dict = {}  # wall-clock medians of the last _interleaved call, for the record


def _interleaved(fns: dict, repeat: int, warmup: tuple | None = None) -> dict:
    """Median CPU seconds (``time.process_time``: all threads of this process) of each function over ``repeat``
    interleaved rounds, after one warm-up call of the functions named in ``warmup`` (default: all).

    CPU time, not wall time: on a machine shared with other jobs the wall time measures the contention; the
    CPU time is the work done (run with ``OMP_WAIT_POLICY=PASSIVE`` so that idle OpenMP threads do not spin).
    """
    for k in fns if warmup is None else warmup:
        fns[k]()
    cpu = {k: [] for k in fns}
    wall = {k: [] for k in fns}
    for _ in range(repeat):
        for k, fn in fns.items():
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            cpu[k].append(time.process_time() - c0)
            wall[k].append(time.perf_counter() - t0)
    WALL.clear()
    WALL.update({k: statistics.median(v) for k, v in wall.items()})
    return {k: statistics.median(v) for k, v in cpu.items()}


def _inputs(cfg, grid, la=157, seed=0):
    g = torch.Generator().manual_seed(seed)
    f, h, w = grid
    video = torch.randn(1, 48, f, 2 * h, 2 * w, generator=g).bfloat16()
    audio = torch.randn(1, la, 20, generator=g).bfloat16()
    pos = torch.randn(100, cfg.video.text_dim, generator=g).bfloat16()
    neg = torch.randn(20, cfg.video.text_dim, generator=g).bfloat16()
    return video, audio, pos, neg


def bench_ratios(model, ref, tokens: int, *, repeat: int, slg_compare: bool = True) -> dict:
    """Forward and step times, ours against the official (``ref``; None: ours only); with ``slg_compare``
    also the steps without skip-layer guidance (item 2's saving)."""
    cfg = model.config
    grid = GRIDS[tokens]
    video, audio, pos, neg = _inputs(cfg, grid)
    t1, t2 = torch.tensor([500.0]), torch.tensor([500.0, 500.0])
    v2, a2 = video.repeat(2, 1, 1, 1, 1), audio.repeat(2, 1, 1)
    mask = torch.tensor([False, True])
    ctx1, ctx2 = [pos], [pos, neg]
    fns = {
        "ours_forward_cold": lambda: model(video, audio, t1, ctx1, ctx1),
        "ours_forward_warm": lambda: model(video, audio, t1, ctx1, ctx1),
        "ours_step": lambda: model(v2, a2, t2, ctx2, ctx2, slg_layer=SLG, slg_mask=mask),
        # the same CFG step as two 1-row passes (make_cfg_denoiser(batch_cfg=False))
        "ours_step_sequential": lambda: (model(video, audio, t1, ctx1, ctx1, slg_layer=SLG, slg_mask=mask[:1]),
                                         model(video, audio, t1, [neg], [neg], slg_layer=SLG, slg_mask=mask[1:])),
    }
    if slg_compare:
        fns["ours_step_no_slg"] = lambda: model(v2, a2, t2, ctx2, ctx2)
    if ref is not None:
        seq = grid[0] * grid[1] * grid[2]

        def off(ctx, slg):
            return ref(vid=[video[0]], audio=[audio[0]], t=t1, vid_context=[ctx], audio_context=[ctx],
                       vid_seq_len=seq, audio_seq_len=audio.shape[1], slg_layer=slg)

        fns["official_forward"] = lambda: off(pos, 0)
        fns["official_step"] = lambda: (off(pos, 0), off(neg, SLG))
        if slg_compare:
            fns["official_step_no_slg"] = lambda: (off(pos, 0), off(neg, 0))
    # the cold forward runs outside the run's text cache, every other call of ours inside it (steady state)
    cold = fns.pop("ours_forward_cold")
    with torch.no_grad():
        with model.cache_text_embeddings():
            before = model.text_cache_stats()

            def cold_outside():  # the run's cache set aside for this call
                saved, model._text_cache = model._text_cache, None
                try:
                    cold()
                finally:
                    model._text_cache = saved

            warmup = ("ours_forward_warm", "official_forward") if ref is not None else ("ours_forward_warm",)
            times = _interleaved({"ours_forward_cold": cold_outside, **fns}, repeat, warmup)
            after = model.text_cache_stats()
    out = {"video_tokens": tokens, "audio_tokens": 157, "cpu_sec": times, "wall_sec": dict(WALL),
           "text_cache": {k: after[k] - before[k] for k in ("hits", "misses", "kv_hits", "kv_misses")}}
    if slg_compare:
        out["slg_saving_ours"] = 1 - times["ours_step"] / times["ours_step_no_slg"]
    if ref is not None:
        out["forward_ratio_cold"] = times["ours_forward_cold"] / times["official_forward"]
        out["forward_ratio_warm"] = times["ours_forward_warm"] / times["official_forward"]
        out["step_ratio"] = times["ours_step"] / times["official_step"]
        out["step_ratio_sequential"] = times["ours_step_sequential"] / times["official_step"]
        if slg_compare:
            out["step_ratio_no_slg"] = times["ours_step_no_slg"] / times["official_step_no_slg"]
            out["slg_saving_official"] = 1 - times["official_step"] / times["official_step_no_slg"]
    return out


def bench_rope(model, official_path: str | None, tokens: int, *, repeat: int) -> dict:
    """RoPE share of our (warm) forward and the time per call of three rotations of one video tensor."""
    from ovi_core.model.rope import _apply_rope_whole, apply_rope, video_rope

    cfg = model.config
    grid = GRIDS[tokens]
    video, audio, pos, _ = _inputs(cfg, grid)
    spent, calls = [0.0], [0]
    orig = apply_rope

    def timed(x, rope):
        t0 = time.process_time()
        y = orig(x, rope)
        spent[0] += time.process_time() - t0
        calls[0] += 1
        return y

    with torch.no_grad(), model.cache_text_embeddings():
        model(video, audio, torch.tensor([500.0]), [pos], [pos])  # warm the caches
        apply_rope = timed
        try:
            t0 = time.process_time()
            model(video, audio, torch.tensor([500.0]), [pos], [pos])
            total = time.process_time() - t0
        finally:
            apply_rope = orig
    hd = cfg.video.head_dim
    x = torch.randn(1, tokens, cfg.video.num_heads, hd).bfloat16()
    table = model.video_model.rope(grid, torch.device("cpu"))
    cs = video_rope(grid, hd, torch.device("cpu"))
    fns = {"complex": lambda: apply_rope(x, table),  # on the CPU: token chunks through one float64 buffer
           "complex_one_multiply": lambda: _apply_rope_whole(x, torch.view_as_complex(table)),  # autograd path
           "real_pairs_before": lambda: apply_rope(x, cs)}
    if official_path:
        from official import load_official

        load_official(official_path)
        om = sys.modules["ovi.modules.model"]
        d = hd
        freqs = torch.cat([om.rope_params(1024, d - 4 * (d // 6)), om.rope_params(1024, 2 * (d // 6)),
                           om.rope_params(1024, 2 * (d // 6))], dim=1)
        gs = torch.tensor([list(grid)])
        fns["official"] = lambda: om.rope_apply(x, gs, freqs)
    per_call = _interleaved(fns, max(repeat, 3))
    return {"video_tokens": tokens, "calls_per_forward": calls[0], "rope_cpu_sec_per_forward": spent[0],
            "forward_cpu_sec": total, "rope_share": spent[0] / total, "cpu_sec_per_video_call": per_call,
            "bit_identical_complex_vs_real": bool(torch.equal(fns["complex"](), fns["real_pairs_before"]())),
            "bit_identical_chunked_vs_one_multiply": bool(torch.equal(fns["complex"](), fns["complex_one_multiply"]()))}


def bench_rms_norm(*, repeat: int) -> dict:
    import torch.nn.functional as F

    from ovi_core.model.tower import RMSNorm

    out = {}
    for dt in (torch.bfloat16, torch.float32):
        x = torch.randn(2, 1984, 1536).to(dt)
        n = RMSNorm(1536).to(dt)
        with torch.no_grad():
            n.weight.normal_(1.0, 0.1)
            w = n.weight.detach()
            times = _interleaved({"ours": lambda n=n, x=x: n(x),
                                  "F.rms_norm": lambda x=x, w=w: F.rms_norm(x, (1536,), w, 1e-6)}, max(repeat, 3))
            a, b = n(x), F.rms_norm(x, (1536,), w, 1e-6)
        out[str(dt).replace("torch.", "")] = {"cpu_sec": times, "bit_identical": bool(torch.equal(a, b)),
                                              "max_abs_diff": float((a.float() - b.float()).abs().max())}
    return out


# ------------------------------------------------------------------------------------------------
# fresh-process measurements on other revisions (item 5 memory, item 4 cache entries)
# ------------------------------------------------------------------------------------------------

_PROBE = r'''
import sys, dataclasses, gc, json, torch
sys.path.insert(0, ROOT_DIR)
sys.path.insert(0, BENCH_DIR)
from hotpath import GRIDS, mid_config, random_model, _inputs
def kib(field):
    for line in open('/proc/self/status'):
        if line.startswith(field):
            return int(line.split()[1])
res = {}
if MEASURE_MEM:
    # one fused block: without autograd the activations of a block are freed before the next one runs, so the
    # peak of a step is that of one block (plus the forward's own tensors) whatever the depth
    cfg = mid_config()
    cfg = dataclasses.replace(cfg, video=dataclasses.replace(cfg.video, num_layers=1),
                              audio=dataclasses.replace(cfg.audio, num_layers=1))
    model = random_model(cfg)
    video, audio, pos, neg = _inputs(model.config, GRIDS[1984])
    v2, a2 = video.repeat(2, 1, 1, 1, 1), audio.repeat(2, 1, 1)
    t2, mask, ctx = torch.tensor([500.0, 500.0]), torch.tensor([False, True]), [pos, neg]
    gc.collect()
    open('/proc/self/clear_refs', 'w').write('5')
    before = kib('VmRSS:')
    with torch.no_grad(), model.cache_text_embeddings():
        model(v2, a2, t2, ctx, ctx, first_frame_clean=True)
    res['peak_rss_growth_mib'] = (kib('VmHWM:') - before) / 1024
    del model
# item 4: cache entries after 5 steps with tensor contexts (tiny model)
from ovi_core.model.config import TINY
from ovi_core.model.loader import random_fusion
from ovi_core.sampling.joint import make_cfg_denoiser, sample_joint
m = random_fusion(TINY, seed=0)
g = torch.Generator().manual_seed(0)
pos, nv, na = (torch.randn(1, 4, 32, generator=g) for _ in range(3))
den = make_cfg_denoiser(m, pos_video_ctx=pos, pos_audio_ctx=pos, neg_video_ctx=nv, neg_audio_ctx=na, slg_layer=1)
with torch.no_grad(), m.cache_text_embeddings():
    sample_joint(den, torch.randn(1, 48, 3, 4, 4), torch.randn(1, 15, 20), steps=5)
    res['text_cache_entries_after_5_steps'] = len(m._text_cache)
print(json.dumps(res))
'''


def _probe(root: str, *, measure_mem: bool) -> dict:
    code = (_PROBE.replace("ROOT_DIR", repr(root)).replace("BENCH_DIR", repr(os.path.join(ROOT, "bench")))
            .replace("MEASURE_MEM", repr(measure_mem)))
    env = dict(os.environ, PYTHONPATH=root)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=root)
    if out.returncode:
        return {"error": out.stderr.strip().splitlines()[-1][:300] if out.stderr.strip() else "failed"}
    import json

    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_revisions(*, measure_mem: bool = True) -> dict:
    """Item 5 peak memory and item 4 cache entries, this tree and the revisions in :data:`MEM_REVS`."""
    res = {"this tree": _probe(ROOT, measure_mem=measure_mem)}
    for label, rev in MEM_REVS.items():
        with tempfile.TemporaryDirectory() as d:
            arch = subprocess.run(["git", "-C", ROOT, "archive", rev, "ovi_core"], capture_output=True)
            if arch.returncode:
                res[label] = {"note": f"revision {rev} is not available in this checkout; skipped"}
                continue
            subprocess.run(["tar", "-x", "-C", d], input=arch.stdout, check=True)
            res[label] = {"rev": rev, **_probe(d, measure_mem=measure_mem)}
    return res


def hotpath_suite(args) -> dict:
    from machine import machine_info

    torch.set_grad_enabled(False)
    official = getattr(args, "official", None)
    res = {"machine": {**machine_info(torch.device("cpu")), "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
                       "loadavg_at_start": os.getloadavg()}, "suite": "hotpath", "times": "CPU seconds of this process",
           "config": "dim 1536, head_dim 128 (12 heads), 4 blocks, ffn 7168, text_dim 4096, text_len 512, bf16; "
                     f"contexts 100 and 20 rows; skip layer {SLG}", "results": {}}
    r = res["results"]
    model = random_model(mid_config())
    ref = None
    if official:
        from official import official_twin

        ref = official_twin(model, official)
    else:
        r["note"] = "no --official PATH: the comparisons with the official code were skipped"
    for tokens in GRIDS:
        r[f"ratios_{tokens}"] = bench_ratios(model, ref, tokens, repeat=args.repeat, slg_compare=tokens == 496)
    r["rope"] = {str(k): bench_rope(model, official, k, repeat=args.repeat) for k in GRIDS}
    del model, ref
    r["rms_norm"] = bench_rms_norm(repeat=args.repeat)
    r["revisions"] = bench_revisions()
    res["machine"]["loadavg_at_end"] = os.getloadavg()
    return res
