"""RoPE forms side by side (issue 22 item 7): seconds per call and whether each gives the bits of the default.

    python bench/rope.py                       # CPU; 704x704x121's video grid cut to --frames latent frames
    python bench/rope.py --device cuda --frames 31 --batch 2   # the full 704^2 call on a GPU
    python bench/rope.py --no-inductor         # skip the compiled forms (inductor's first compile takes a while)

Forms: ``complex_chunked`` (the CPU default), ``complex_whole`` (one complex128 multiply: autograd, and CUDA when
the fused kernel is off), ``real_eager`` (real arithmetic, unfused), ``real_inductor`` (real arithmetic compiled by
inductor: the form inside ``--compile`` and, on CUDA, the default) and ``complex_inductor`` (the complex multiply
compiled, for contrast: inductor falls back to eager ops for it). Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from machine import machine_info  # noqa: E402 (bench/ is the script's folder)

from ovi_core.model import rope  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn, device: torch.device, repeat: int) -> tuple[float, torch.Tensor]:
    out = fn()  # warm (and compile)
    _sync(device)
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return best, out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--frames", type=int, default=4, help="latent frames of the 22x22 (704^2) grid; 31 = 121 frames")
    ap.add_argument("--batch", type=int, default=1, help="rows (2 = batched CFG)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--no-inductor", action="store_true")
    ap.add_argument("--json", default="")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    grid, heads, head_dim = (args.frames, 22, 22), 24, 128
    table = rope.video_rope_table(grid, head_dim, device)
    tokens = table.shape[0]
    x = torch.randn(args.batch, tokens, heads, head_dim, generator=torch.Generator().manual_seed(0))
    x = x.to(device=device, dtype=torch.bfloat16)
    ctab = torch.view_as_complex(table)

    def complex_mul(x, ctab):
        b, n, h, d = x.shape
        xc = torch.view_as_complex(x.to(torch.float64).contiguous().view(b, n, h, d // 2, 2))
        return torch.view_as_real(xc * ctab).view(b, n, h, d).to(x.dtype)

    forms = {
        "complex_whole": lambda: rope._apply_rope_whole(x, ctab),
        "real_eager": lambda: rope.rotate_pairs(x, table),
    }
    if device.type == "cpu":
        forms = {"complex_chunked": lambda: rope._apply_rope_chunked(x, ctab), **forms}
    compile_s = {}
    if not args.no_inductor:
        real_c = torch.compile(rope.rotate_pairs, dynamic=False, fullgraph=True)
        cplx_c = torch.compile(complex_mul, dynamic=False)
        for name, fn, a in (("real_inductor", real_c, table), ("complex_inductor", cplx_c, ctab)):
            t0 = time.perf_counter()
            with torch.no_grad():
                fn(x, a)
            _sync(device)
            compile_s[name] = round(time.perf_counter() - t0, 2)
            forms[name] = (lambda fn=fn, a=a: fn(x, a))
    ref = None
    rows = {}
    with torch.no_grad():
        for name, fn in forms.items():
            sec, out = _time(fn, device, args.repeat)
            if ref is None:
                ref = out
            rows[name] = {"s_per_call": round(sec, 5), "bit_identical_to_first": bool(torch.equal(out, ref)),
                          "max_abs_diff": float((out.float() - ref.float()).abs().max())}
            if name in compile_s:
                rows[name]["first_call_s"] = compile_s[name]
    result = {
        "bench": "rope", "machine": machine_info(device),
        "x": list(x.shape), "dtype": "bfloat16", "elements": x.numel(), "forms": rows,
    }
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    return result


if __name__ == "__main__":
    main()
