"""Sizes, in-memory weight packing, the RoPE and fp8-load sections and the result table of ``bench/gpu_check.py``."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from ovi_core.model.config import OVI_11B, TINY, FusionConfig
from ovi_core.quant import ggml
from ovi_core.quant.fp8 import to_scaled_fp8
from ovi_core.quant.policy import quantizable
from ovi_core.quant.tensor import QuantizedWeight
from ovi_core.vae.wan_config import WanVAEConfig

GIB = 2**30


@dataclasses.dataclass
class Size:
    cfg: FusionConfig
    latent: tuple[int, int, int]  # video latent F, H, W
    audio_len: int
    text_rows: int
    vae: WanVAEConfig
    ffn: tuple[int, int, int]  # the ffn.2 matmul: rows, in, out
    vae_tile: int  # forced tile side (latent pixels) and overlap of the tiled decode
    vae_overlap: int
    vae_latent: tuple[int, int, int]  # F, H, W of the decoded latent


def _small_cfg() -> FusionConfig:
    tw = dataclasses.replace(TINY.video, dim=128, ffn_dim=256, num_heads=2, num_layers=2)
    return dataclasses.replace(TINY, video=tw, audio=dataclasses.replace(TINY.audio, dim=128, ffn_dim=256,
                                                                         num_heads=2, num_layers=2))


FULL = Size(OVI_11B, (31, 44, 44), 157, 120, WanVAEConfig.full(), (2 * 15004, 14336, 3072), 24, 8,
            (31, 44, 44))
SMALL = Size(_small_cfg(), (4, 8, 8), 16, 6, WanVAEConfig.tiny(), (2 * 157, 256, 128), 2, 1,
             (2, 2, 4))


def pack(model: nn.Module, fmt: str):
    """Replace the fused-block Linear weights by packed ``fmt`` (``fp8`` scaled e4m3fn or ``q8_0``) weights,
    on their device; returns a function that puts the original weights back."""
    saved = []
    with torch.no_grad():
        for name, mod in model.named_modules():
            if not isinstance(mod, nn.Linear) or not quantizable(name + ".weight", tuple(mod.weight.shape)):
                continue
            w = mod.weight
            if fmt == "fp8":
                w8, s = to_scaled_fp8(w)
                q = QuantizedWeight.from_fp8(w8, s)
            else:
                q = QuantizedWeight.from_ggml(ggml.quantize(w, ggml.Q8_0), ggml.Q8_0, w.shape)
            saved.append((mod, w))
            mod._parameters["weight"] = nn.Parameter(q, requires_grad=False)
    model.compute_dtype = next(p for p in model.parameters() if not isinstance(p, QuantizedWeight)).dtype

    def restore():
        for mod, w in saved:
            mod._parameters["weight"] = w
        model.compute_dtype = None
    return restore


def sec_rope(chk) -> dict:
    """RoPE on one video q of the clip (``[2, L, heads, head_dim]`` bf16): the eager complex multiply (the official
    form) against the real-arithmetic form, compiled on CUDA (what :func:`ovi_core.model.rope.apply_rope` runs there;
    eager with ``--small``, where an inductor compile would take minutes): seconds, peak memory, same bits."""
    import time

    from ovi_core.model import rope

    c = chk.size.cfg.video
    f, h, w = chk.size.latent
    grid = (f, h // 2, w // 2)
    table_ = rope.video_rope_table(grid, c.head_dim, chk.dev)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, table_.shape[0], c.num_heads, c.head_dim, generator=g).to(chk.dev, torch.bfloat16)
    # whether the DiT forwards of the earlier sections kept the fused kernel (False: it failed to compile there)
    out: dict = {"shape": list(x.shape), "fused_kernel_in_use": bool(chk.cuda and rope._fused_enabled)}
    fused = rope.rotate_pairs
    if chk.cuda:
        fused = torch.compile(rope.rotate_pairs, dynamic=True, fullgraph=True)
        t0 = time.perf_counter()
        fused(x, table_)
        chk.sync()
        out["fused_first_call_sec"] = round(time.perf_counter() - t0, 2)
    forms = {"complex_eager": lambda: rope._apply_rope_whole(x, torch.view_as_complex(table_)),
             "real_fused" if chk.cuda else "real_eager": lambda: fused(x, table_)}
    ys = {}
    for name, fn in forms.items():
        chk.reset_peak()
        sec, ys[name] = chk.timed(fn, repeat=5)
        out[name] = {"sec": round(sec, 5), **chk.peak()}
    a, b = ys.values()
    out["bit_identical"] = bool(torch.equal(a, b))
    out["max_abs_diff"] = float((a.float() - b.float()).abs().max())
    return out


def sec_fp8_load(chk) -> dict:
    """fp8 precision at load (issue 22 item 4): a bf16 file of the model's widths with 2 fused blocks (full size:
    2.7 GiB) loaded as fp8 straight to the device, converted on the CPU while reading, against the old way (bf16 to
    the device, then converted there): seconds, device memory above what was allocated before, same weights."""
    import os
    import tempfile
    import time

    from ovi_core.model.fusion import OviFusionModel
    from ovi_core.model.loader import fp8_state_dict, load_fusion, save_fusion

    c = chk.size.cfg
    if not chk.small:
        c = dataclasses.replace(c, video=dataclasses.replace(c.video, num_layers=2),
                                audio=dataclasses.replace(c.audio, num_layers=2))
    m = OviFusionModel(c, device="meta", dtype=torch.bfloat16).to_empty(device="cpu")
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0.0, 0.02)
    out: dict = {"layers": c.video.num_layers}
    sds = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.safetensors")
        save_fusion(m, path)
        del m
        out["file_gib"] = round(os.path.getsize(path) / GIB, 3)
        for way in ("float8_while_reading", "bf16_then_convert_on_device"):
            base = torch.cuda.memory_allocated(chk.dev) if chk.cuda else 0
            chk.reset_peak()
            t0 = time.perf_counter()
            if way == "float8_while_reading":
                mod = load_fusion(path, device=chk.dev, dtype=torch.bfloat16, config=c, float8=torch.float8_e4m3fn)
            else:
                mod = load_fusion(path, device=chk.dev, dtype=torch.bfloat16, config=c)
                mod.load_state_dict(fp8_state_dict(mod.state_dict()), assign=True)
            chk.sync()
            res = {"sec": round(time.perf_counter() - t0, 2)}
            sd = mod.state_dict()
            res["model_gib"] = round(sum(t.numel() * t.element_size() for t in sd.values()) / GIB, 3)
            if chk.cuda:
                res["peak_above_before_gib"] = round((torch.cuda.max_memory_allocated(chk.dev) - base) / GIB, 3)
            sds[way] = {k: t.cpu() for k, t in sd.items()}
            out[way] = res
            del mod, sd
    a, b = sds.values()
    out["same_weights"] = all(torch.equal(a[k].view(torch.uint8), b[k].view(torch.uint8)) if a[k].element_size() == 1
                              else torch.equal(a[k], b[k]) for k in a)
    return out


def table(doc: dict) -> str:
    cols = ("section", "status", "sec/step", "alloc GiB", "reserved GiB", "syncs", "copies", "note")
    rows = []
    for name, r in doc["sections"].items():
        subs = [(name, r)] + [(f"{name}.{k}", v) for k, v in r.items() if isinstance(v, dict)]
        for label, s in subs:
            sec = s.get("sec_per_step", s.get("sec"))
            note = s.get("error") or s.get("skipped") or s.get("mode") or s.get("probe") or ""
            if label == name or sec is not None or note:
                rows.append((label, s.get("status", ""), sec, s.get("max_allocated_gib"), s.get("max_reserved_gib"),
                             s.get("syncs_per_forward", s.get("syncs")), s.get("copies_per_forward"),
                             str(note)[:60]))
    lines = [" | ".join(cols), " | ".join("---" for _ in cols)]
    lines += [" | ".join("" if v is None else str(v) for v in row) for row in rows]
    return "\n".join(lines)
