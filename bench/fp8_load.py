"""Host memory of loading a bf16 fusion file as fp8 (issue 22 item 4): convert-while-reading against the old way
(load bf16, then ``fp8_state_dict`` of the loaded model). Each way runs in a fresh process; prints peak RSS growth.

    python bench/fp8_load.py [--json PATH]   # writes a 441 MiB bf16 file (dim 1024, 4 blocks per tower) to a temp dir
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from machine import machine_info  # noqa: E402 (bench/ is the script's folder)

from ovi_core.model.config import TINY  # noqa: E402
from ovi_core.model.loader import fp8_state_dict, load_fusion, random_fusion, save_fusion  # noqa: E402

_TOWER = dict(dim=1024, ffn_dim=4096, num_heads=8, num_layers=4, text_dim=1024)
CFG = dataclasses.replace(TINY, video=dataclasses.replace(TINY.video, **_TOWER),
                          audio=dataclasses.replace(TINY.audio, **_TOWER))


def _hwm_kib() -> int:
    """Peak resident memory of this process (``VmHWM``; unlike ``ru_maxrss`` it does not carry over an exec)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))


def _one(path: str, way: str) -> dict:
    base = _hwm_kib()
    if way == "load_then_convert":
        m = load_fusion(path, dtype=torch.bfloat16, config=CFG)
        m.load_state_dict(fp8_state_dict(m.state_dict()), assign=True)
    else:
        m = load_fusion(path, dtype=torch.bfloat16, config=CFG, float8=torch.float8_e4m3fn)
    n = sum(t.numel() * t.element_size() for t in m.state_dict().values())
    grow = _hwm_kib() - base
    return {"way": way, "model_mib": round(n / 2**20, 1), "peak_rss_growth_mib": round(grow / 1024, 1)}


def main() -> dict:
    if len(sys.argv) == 3 and sys.argv[1] != "--json":  # child process
        print(json.dumps(_one(sys.argv[1], sys.argv[2])))
        return {}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.safetensors")
        save_fusion(random_fusion(CFG, seed=0), path, dtype=torch.bfloat16)
        out = {"bench": "fp8_load", "machine": machine_info(torch.device("cpu")),
               "file_mib": round(os.path.getsize(path) / 2**20, 1), "runs": []}
        for way in ("load_then_convert", "float8_while_reading"):
            res = subprocess.run([sys.executable, __file__, path, way], capture_output=True, text=True, check=True)
            out["runs"].append(json.loads(res.stdout.strip().splitlines()[-1]))
    text = json.dumps(out, indent=1)
    print(text)
    if len(sys.argv) == 3:
        with open(sys.argv[2], "w") as f:
            f.write(text + "\n")
    return out


if __name__ == "__main__":
    main()
