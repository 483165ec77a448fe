"""bench/gpu_check.py --small: the prepared device check runs its GPU code on CPU at a tiny size and reports
every section (one JSON document and a table)."""

import json
import os
import sys

import pytest

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench")
sys.path.insert(0, BENCH)

import gpu_check  # noqa: E402

STEP_KEYS = {"sec_per_step", "max_allocated_gib", "max_reserved_gib", "syncs_per_forward", "copies_per_forward",
             "finite"}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    path = tmp_path_factory.mktemp("gpu_check") / "out.json"
    only = ",".join(s for s in gpu_check.SECTIONS if not s.startswith("compile"))  # see test_compile_section
    assert gpu_check.main(["--small", "--only", only, "--json", str(path)]) == 0
    return json.loads(path.read_text())


def test_every_section_runs(report, capsys):
    sections = report["sections"]
    assert set(sections) == set(gpu_check.SECTIONS) - {"compile", "compile_q8_0"}
    failed = {k: v.get("error") for k, v in sections.items() if v.get("status") != "ok"}
    assert not failed, failed
    assert report["small"] is True and report["total_sec"] > 0


def test_step_sections_report_speed_memory_and_syncs(report):
    s = report["sections"]
    env = s["env"]
    assert env["device"] == "cpu" and env["pre_ampere_refusal"] is None and "sdpa" in env["attention_installed"]
    for name in ("dit_gpu", "dit_block_swap_10", "dit_block_swap_0", "dit_offload"):
        assert STEP_KEYS <= set(s[name]), name
        assert s[name]["finite"] and s[name]["sec_per_step"] > 0
        # one copy per forward: the skip-layer rows (the CPU mask's nonzero rows), nothing per layer
        assert s[name]["copies_per_forward"] == 1, name
    for name in ("dit_block_swap_10", "dit_block_swap_0", "dit_offload"):
        assert s[name]["rel_diff_to_bf16_sdpa"] == 0.0  # every memory mode computes the same numbers
    assert STEP_KEYS <= set(s["dit_fp8"]["upcast"]) and STEP_KEYS <= set(s["dit_q8_0"]["upcast"])
    fp8 = s["dit_fp8"]["fp8_compute"]
    assert fp8["emulated"] and fp8["layers"] > 0 and fp8["copies_per_forward"] == 1
    assert fp8["rel_diff_to_bf16_sdpa"] < 0.1
    assert s["q6_k_linear"]["copies_per_call"] == 0


def test_fp8_linear_and_vae_sections(report):
    f = report["sections"]["fp8_linear"]
    assert f["fp32_with_bias"] == {"ok": True}
    for key in ("fp8_tensorwise", "fp8_rowwise"):
        assert f[key]["rel_err"] < 0.1 and f[key]["sec"] > 0, key
    v = report["sections"]["vae_decode"]
    assert v["auto"]["tiles"] == 1 and v["tiled"]["tiles"] > 1
    assert v["auto"]["frames"] == v["tiled"]["frames"] == 5


def test_table_lists_every_section(report):
    text = gpu_check.table(report)
    for name in report["sections"]:
        assert f"\n{name} | ok |" in text


@pytest.mark.parametrize("section", ["compile", "compile_q8_0"])
def test_compile_section(tmp_path, section):
    path = tmp_path / "c.json"
    assert gpu_check.main(["--small", "--only", section, "--json", str(path)]) == 0
    c = json.loads(path.read_text())["sections"][section]
    assert c["status"] == "ok", c.get("error")
    assert {"unique_graphs_after_step_1", "unique_graphs_after_step_2", "graph_breaks", "recompile_limit_hit"} <= set(c)
    assert c["unique_graphs_after_step_2"] == c["unique_graphs_after_step_1"] > 0  # no recompiles per step
    assert c["graph_breaks"] == 0 and not c["recompile_limit_hit"]


def test_unknown_section_is_refused():
    with pytest.raises(SystemExit):
        gpu_check.main(["--small", "--only", "nope"])


def test_rope_section(report):
    r = report["sections"]["rope"]
    assert r["status"] == "ok" and r["bit_identical"] and r["max_abs_diff"] == 0.0
    assert r["complex_eager"]["sec"] > 0 and r["real_eager"]["sec"] > 0


def test_fp8_load_section(report):
    r = report["sections"]["fp8_load"]
    assert r["status"] == "ok" and r["same_weights"]
    new, old = r["float8_while_reading"], r["bf16_then_convert_on_device"]
    assert new["model_gib"] == old["model_gib"] < r["file_gib"]
