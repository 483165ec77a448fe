"""Seconds per 10 M values of ``ggml.quantize`` (Q8_0, Q6_K, Q4_K), this tree's quantizer or a past one.

    python bench/ggml_speed.py --threads 1 2                 # this tree
    python bench/ggml_speed.py --threads 1 2 --rev a509f18   # ovi_core/quant/ggml.py as of a commit

Input: a bf16 [2048, 5120] tensor (10.5 M values, N(0, 0.02)), as ``quantize`` streams them; best of
``--repeat`` runs after one warm-up. With ``--rev`` the module is read with ``git show REV:path`` into a
temporary file (the dequantizer and the byte format are the same across revisions).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import torch  # noqa: E402


def load(rev: str | None):
    if rev is None:
        from ovi_core.quant import ggml
        return ggml
    src = subprocess.run(["git", "-C", ROOT, "show", f"{rev}:ovi_core/quant/ggml.py"], check=True,
                         capture_output=True, text=True).stdout
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(src)
    spec = importlib.util.spec_from_file_location(f"ggml_{rev}", f.name)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    os.unlink(f.name)
    return mod


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1])
    ap.add_argument("--rev", default=None, help="git revision of ovi_core/quant/ggml.py (default: this tree)")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    ggml = load(args.rev)
    x = (torch.randn(2048, 5120, generator=torch.Generator().manual_seed(0)) * 0.02).to(torch.bfloat16)
    out = {"rev": args.rev or "worktree", "values": x.numel(), "cpu_count": os.cpu_count(),
           "load_avg_1min": os.getloadavg()[0], "sec_per_10M": {}}
    for nt in args.threads:
        torch.set_num_threads(nt)
        for q in (ggml.Q8_0, ggml.Q6_K, ggml.Q4_K):
            ggml.quantize(x[:8], q)
            ts = []
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                ggml.quantize(x, q)
                ts.append(time.perf_counter() - t0)
            out["sec_per_10M"][f"{ggml.TYPE_NAMES[q]}@{nt}"] = round(min(ts) / x.numel() * 1e7, 3)
    json.dump(out, sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
