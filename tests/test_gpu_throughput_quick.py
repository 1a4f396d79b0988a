"""``benchmarks/gpu_throughput.py --quick`` on the CPU: the GPU benchmark keeps running between GPU sessions.

It runs rarely and on borrowed machines, so it is exercised here at toy sizes (8x8 images, hundreds of
particles, one timed step) on every test run: every case must produce a number, none an error.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path


BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_throughput.py"


def load_benchmark():
    spec = importlib.util.spec_from_file_location("gpu_throughput", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_run_on_the_cpu_measures_every_case(tmp_path, capsys):
    out = tmp_path / "gpu_throughput.json"
    load_benchmark().main(["--quick", "--device", "cpu", "--out", str(out)])
    result = json.loads(out.read_text())
    assert result["meta"]["device"] == "cpu" and result["meta"]["quick"] is True
    eager = [r for r in result["unet"] if not r["compiled"]]
    assert [(r["net"], r["precision"]) for r in eager] == [("unet", "float32"), ("unet", "bfloat16")]
    for row in eager + [result["engine"]] + result["flows"]:
        assert "error" not in row, row
        assert row["steps_per_s"] > 0
    assert {(r["flow"], r["particles"]) for r in result["flows"]} == {
        (flow, n) for flow in ("mmd", "svgd", "kde-kl") for n in (128, 512)}
    compiled = [r for r in result["unet"] if r["compiled"]]
    assert len(compiled) == 2 and all(r["skipped"].startswith("compilation off") for r in compiled)
    assert set(result["ratios"]) == {"unet eager: bf16 / fp32",
                                     "unet float32: engine (Model.fit) / hand-written loop"}
    printed = capsys.readouterr().out
    assert "particle flow (Euler step)" in printed and f"wrote {out}" in printed
