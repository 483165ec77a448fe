#!/usr/bin/env python3
"""Run one API-format workflow against a running ComfyUI server and report what happened.

    python tools/comfy_smoke.py api_workflows/ovi_text_to_av_api.json --set OviJointSampler.steps=2

POSTs the graph to ``/prompt``, listens on the server's websocket for the node UI texts (what
``PromptServer.send_progress_text`` shows on a node) when ``aiohttp`` is importable (it is in every
ComfyUI environment), polls ``/history/<id>`` until the prompt finished, then prints the status, the
node errors / execution error and every output file. Exit status: 0 on success, 1 on a failed or
rejected prompt, 2 on a timeout or an unreachable server. With ``--expect-error TEXT`` the roles flip:
0 only when the prompt is rejected or fails with a message containing TEXT (for checks that a bad
input is refused at queue time).

Stdlib only (plus optional aiohttp); a tool for a person or a helper script, not part of the plugin.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid


def _request(url: str, data: dict | None = None, timeout: float = 30.0) -> tuple[int, dict]:
    body = None if data is None else json.dumps(data).encode("utf-8")
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read().decode("utf-8") or "{}")
    except urllib.error.HTTPError as e:
        raw = e.read().decode("utf-8", "replace")
        try:
            return e.code, json.loads(raw)
        except json.JSONDecodeError:
            return e.code, {"error": raw}


def _parse_value(raw: str):
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def apply_overrides(graph: dict, sets: list[str]) -> None:
    """``KEY.input=VALUE`` where KEY is a node id or a class_type (then every node of that type); a KEY not in
    the graph is reported and skipped."""
    for s in sets:
        if "=" not in s or "." not in s.split("=", 1)[0]:
            raise SystemExit(f"--set {s!r}: expected NODE.input=VALUE (NODE = node id or class_type)")
        lhs, raw = s.split("=", 1)
        key, name = lhs.rsplit(".", 1)
        targets = [n for nid, n in graph.items() if nid == key or n.get("class_type") == key]
        if not targets:  # not fatal, so one set of overrides fits several workflows
            print(f"(--set {s}: no node {key!r} in this workflow)", file=sys.stderr)
        for n in targets:
            n.setdefault("inputs", {})[name] = _parse_value(raw)


class TextListener:
    """Collects node UI texts (binary event 3) and execution messages from ``/ws`` in a thread."""

    def __init__(self, base: str, client_id: str):
        self.base, self.client_id = base, client_id
        self.texts: list[tuple[str, str]] = []
        self.events: list[dict] = []
        self.ok = False
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self, wait: float = 5.0) -> None:
        self._thread.start()
        self._ready.wait(wait)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        try:
            import asyncio

            import aiohttp
        except ImportError:
            self._ready.set()
            return

        async def main():
            url = self.base.replace("http", "ws", 1) + f"/ws?clientId={self.client_id}"
            try:
                async with aiohttp.ClientSession() as s, s.ws_connect(url) as ws:
                    self.ok = True
                    self._ready.set()
                    while not self._stop.is_set():
                        try:
                            msg = await ws.receive(timeout=0.25)
                        except asyncio.TimeoutError:
                            continue
                        if msg.type == aiohttp.WSMsgType.BINARY:
                            self._binary(msg.data)
                        elif msg.type == aiohttp.WSMsgType.TEXT:
                            try:
                                self.events.append(json.loads(msg.data))
                            except json.JSONDecodeError:
                                pass
                        elif msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                            break
            except Exception as e:  # noqa: BLE001 (the listener is optional)
                print(f"(websocket unavailable: {type(e).__name__}: {e})", file=sys.stderr)
            finally:
                self._ready.set()

        asyncio.run(main())

    def _binary(self, data: bytes) -> None:
        if len(data) < 8 or struct.unpack(">I", data[:4])[0] != 3:  # BinaryEventTypes.TEXT
            return
        n = struct.unpack(">I", data[4:8])[0]
        node = data[8:8 + n].decode("utf-8", "replace")
        self.texts.append((node, data[8 + n:].decode("utf-8", "replace")))


def output_files(outputs: dict, comfy_dir: str | None, base: str) -> list[str]:
    files = []
    for nid, out in sorted(outputs.items()):
        for key, items in out.items():
            if not isinstance(items, list):
                continue
            for it in items:
                if isinstance(it, dict) and "filename" in it:
                    kind = it.get("type", "output")
                    if comfy_dir:
                        p = os.path.join(comfy_dir, kind, it.get("subfolder", ""), it["filename"])
                    else:
                        p = (f"{base}/view?filename={it['filename']}&subfolder={it.get('subfolder', '')}"
                             f"&type={kind}")
                    files.append(f"node {nid} {key}: {p}")
    return files


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    ap.add_argument("workflow", help="API-format workflow JSON (e.g. api_workflows/ovi_text_to_av_api.json)")
    ap.add_argument("--server", default="http://127.0.0.1:8188")
    ap.add_argument("--set", action="append", default=[], metavar="NODE.input=VALUE",
                    help="override an input (NODE = node id or class_type; VALUE parsed as JSON when it parses)")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the prompt to finish")
    ap.add_argument("--comfy-dir", default=os.environ.get("COMFY_DIR"),
                    help="ComfyUI folder, to print output files as paths (default $COMFY_DIR)")
    ap.add_argument("--expect-error", metavar="TEXT", help="succeed only if the prompt fails with TEXT in its message")
    ap.add_argument("--json-out", metavar="FILE", help="also write the summary (status, texts, errors, files) as JSON")
    args = ap.parse_args(argv)

    with open(args.workflow, encoding="utf-8") as f:
        graph = json.load(f)
    if "nodes" in graph and "links" in graph:
        print("error: this is a UI-format workflow; pass the *_api.json file", file=sys.stderr)
        return 2
    graph = graph.get("prompt", graph)
    apply_overrides(graph, args.set)
    base = args.server.rstrip("/")
    client_id = uuid.uuid4().hex
    listener = TextListener(base, client_id)
    listener.start()
    t0 = time.time()
    try:
        code, resp = _request(f"{base}/prompt", {"prompt": graph, "client_id": client_id})
    except OSError as e:
        print(f"error: cannot reach {base}: {e}", file=sys.stderr)
        listener.stop()
        return 2
    summary: dict = {"workflow": args.workflow, "http": code}
    failure_text = ""
    if code != 200 or resp.get("node_errors"):
        status = "rejected"
        failure_text = json.dumps(resp)
        summary.update(status=status, error=resp.get("error"), node_errors=resp.get("node_errors"))
    else:
        pid = resp["prompt_id"]
        summary["prompt_id"] = pid
        hist = None
        while time.time() - t0 < args.timeout:
            _, h = _request(f"{base}/history/{pid}")
            if pid in h and h[pid].get("status", {}).get("completed") is not None and (
                    h[pid]["status"].get("status_str") in ("success", "error")):
                hist = h[pid]
                break
            time.sleep(0.5)
        if hist is None:
            summary["status"] = "timeout"
        else:
            st = hist["status"]
            summary["status"] = st.get("status_str")
            for kind, data in st.get("messages", []):
                if kind in ("execution_error", "execution_interrupted"):
                    summary["execution_error"] = {k: data.get(k) for k in
                                                  ("node_id", "node_type", "exception_type", "exception_message")}
                    summary["traceback"] = "".join(data.get("traceback") or [])
                    failure_text += json.dumps(summary["execution_error"])
            summary["files"] = output_files(hist.get("outputs", {}), args.comfy_dir, base)
    time.sleep(0.3)  # let the last websocket messages arrive
    listener.stop()
    summary["seconds"] = round(time.time() - t0, 2)
    summary["ui_text"] = [{"node": n, "text": t} for n, t in listener.texts]

    print(f"{args.workflow}: {summary['status']} in {summary['seconds']} s (http {code})")
    if summary.get("error"):
        print("  error:", json.dumps(summary["error"]))
    for nid, err in (summary.get("node_errors") or {}).items():
        for e in err.get("errors", []):
            print(f"  node {nid} ({err.get('class_type')}): {e.get('message')}: {e.get('details')}")
    if summary.get("execution_error"):
        e = summary["execution_error"]
        print(f"  execution error in node {e['node_id']} ({e['node_type']}): {e['exception_type']}: "
              f"{e['exception_message']}")
        if args.expect_error is None:
            print(summary["traceback"])
    for item in summary["ui_text"]:
        print(f"  ui text, node {item['node']}: {item['text']}")
    if not listener.ok:
        print("  (no websocket: UI texts not collected)")
    for line in summary.get("files", []):
        print("  " + line)
    if args.json_out:
        with open(args.json_out, "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=2)
    if summary["status"] == "timeout":
        return 2
    if args.expect_error is not None:
        ok = summary["status"] != "success" and args.expect_error.lower() in failure_text.lower()
        print(f"  expected error {args.expect_error!r}: {'seen' if ok else 'NOT seen'}")
        return 0 if ok else 1
    return 0 if summary["status"] == "success" else 1


if __name__ == "__main__":
    sys.exit(main())
