#!/usr/bin/env python3
"""Measure a running ComfyUI server's resident memory around Ovi runs (issue #20: memory given back on ``/free``).

    python tools/comfy_rss.py --pid 1234 --server http://127.0.0.1:8188 workflows/ovi_text_to_av_api.json \\
        --set OviJointSampler.steps=2 --queue 10 --core-vae Wan2.2_VAE.pth

Reads ``VmRSS`` of ``--pid`` (Linux ``/proc``): before the first prompt, after one generation, after ``POST /free``
with ``unload_models`` and ``free_memory``, after each of ``--queue`` more generations queued at once (each with
another seed, so that ComfyUI's cache does not skip them), and after a second ``/free``. With ``--core-vae`` it
then runs a core-only graph (``VAELoader`` -> ``VAEEncode`` -> ``VAEDecode`` -> ``PreviewImage``) to check that
a core model still loads. Prints one JSON object. Stdlib only; a tool for a person, not part of the plugin.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.request

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from comfy_smoke import apply_overrides  # noqa: E402


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def _post(base: str, path: str, data: dict) -> dict:
    req = urllib.request.Request(base + path, data=json.dumps(data).encode(), headers={"Content-Type":
                                                                                      "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        body = r.read().decode() or "{}"
    return json.loads(body) if body.strip().startswith("{") else {}


def _get(base: str, path: str) -> dict:
    with urllib.request.urlopen(base + path, timeout=30) as r:
        return json.loads(r.read().decode() or "{}")


def queue(base: str, graph: dict) -> str:
    resp = _post(base, "/prompt", {"prompt": graph, "client_id": "ovi-rss"})
    if "prompt_id" not in resp:
        raise RuntimeError(f"prompt refused: {resp}")
    return resp["prompt_id"]


def wait(base: str, pid: str, timeout: float) -> dict:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        h = _get(base, f"/history/{pid}")
        if pid in h and h[pid].get("status", {}).get("completed") is not None:
            return h[pid]["status"]
        time.sleep(0.5)
    raise TimeoutError(f"prompt {pid} did not finish in {timeout} s")


def free(base: str, settle: float) -> None:
    _post(base, "/free", {"unload_models": True, "free_memory": True})
    time.sleep(settle)


def core_graph(vae: str) -> dict:
    return {
        "1": {"class_type": "VAELoader", "inputs": {"vae_name": vae}},
        "2": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}},
        "3": {"class_type": "VAEEncode", "inputs": {"pixels": ["2", 0], "vae": ["1", 0]}},
        "4": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["1", 0]}},
        "5": {"class_type": "PreviewImage", "inputs": {"images": ["4", 0]}},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("workflow")
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--server", default="http://127.0.0.1:8188")
    ap.add_argument("--set", action="append", default=[], metavar="NODE.input=VALUE")
    ap.add_argument("--seed-node", default="OviJointSampler", help="node whose 'seed' is varied per prompt")
    ap.add_argument("--queue", type=int, default=10)
    ap.add_argument("--core-vae", default="")
    ap.add_argument("--settle", type=float, default=5.0, help="seconds to wait after /free")
    ap.add_argument("--timeout", type=float, default=900.0)
    a = ap.parse_args(argv)
    base = a.server.rstrip("/")
    with open(a.workflow) as f:
        graph = json.load(f)
    apply_overrides(graph, a.set)
    seed_id = next(k for k, v in graph.items() if v["class_type"] == a.seed_node or k == a.seed_node)
    out: dict = {"pid": a.pid, "workflow": a.workflow, "sets": a.set}

    def run(seed: int) -> str:
        graph[seed_id]["inputs"]["seed"] = seed
        return queue(base, graph)

    out["rss_before"] = rss_mib(a.pid)
    out["first"] = wait(base, run(1), a.timeout).get("status_str")
    out["rss_after_generation"] = rss_mib(a.pid)
    free(base, a.settle)
    out["rss_after_free"] = rss_mib(a.pid)
    ids = [run(100 + i) for i in range(a.queue)]
    rss, status = [], []
    for pid in ids:
        status.append(wait(base, pid, a.timeout).get("status_str"))
        rss.append(round(rss_mib(a.pid), 1))
    out["queued_status"], out["rss_after_each_queued"] = status, rss
    free(base, a.settle)
    out["rss_after_second_free"] = rss_mib(a.pid)
    if a.core_vae:
        out["core_vae"] = wait(base, queue(base, core_graph(a.core_vae)), a.timeout)
    out["free_vs_before_pct"] = round(100 * (out["rss_after_free"] / out["rss_before"] - 1), 1)
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
