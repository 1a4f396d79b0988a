"""Throughput on a GPU (issue 21): EDM U-Net training and particle-flow steps, written as JSON and a table.

* **EDM U-Net training** at 32x32 RGB (batch 128): the ``edm`` preset's score flow (EDM preconditioning around
  the registered ``unet``) trained by its ``dsm-edm`` loss with fused Adam, in a hand-written loop that never
  syncs with the host inside the timed steps. Two networks: ``unet`` (what ``network = "auto"`` builds for
  3x32x32) and ``unet-wide`` (128 base channels, 4 levels, 2 blocks: nearer EDM's CIFAR-10 network). Each in
  float32 and under bfloat16 autocast, eager and ``torch.compile``d. Reported: steps/s, images/s, peak memory;
  for compiled runs the first step's wall time (compilation) separately. Each compiled case runs in its own
  process under a time cap (``--compile-cap``) and is skipped, with the reason recorded, when it errors, runs
  past its cap or would overrun ``--budget``.
* **The engine** (``Model.fit``) on the ``unet`` in float32: the same step through the trainer (batches copied
  from the CPU, a finiteness check and a log record per step, EMA), as a ratio to the hand-written loop.
* **Particle flows** at 10^4 and 10^5 particles on ``ring5`` (2-D): one Euler step (one drift evaluation) of
  the ``mmd`` preset (multi-bandwidth Gaussian witness gradient to 2,000 targets plus the particles' own
  kernel sum), ``svgd`` (the KL flow through the Stein kernel) and ``kl`` (KDE-KL: the particles' KDE score),
  each as the preset runs it (chunked interactions, memory O(N * chunk)).

``--quick`` shrinks every size (8x8 images, batch 4, hundreds of particles, one step, no compilation) so the
script runs on a CPU in seconds; ``tests/test_gpu_throughput_quick.py`` keeps it working that way. Without a
CUDA device and without ``--device`` it runs ``--quick`` on the CPU (so ``diffflow bench`` stays short there).
``scripts/gpu-check.sh`` runs the full version on a GPU machine. The JSON goes to ``--out``, by default
``gpu_throughput.json`` in the bench output folder (``$DIFFFLOW_BENCH_OUT``, else ``~/.cache/diffflow/bench``):

    python benchmarks/gpu_throughput.py [--quick] [--device cuda] [--out /tmp/diffflow-bench/gpu_throughput.json]
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import torch

UNETS: dict[str, Any] = {
    "unet": "auto",  # the score flow's choice for 3x32x32: the registered unet with its defaults
    "unet-wide": {"name": "unet", "channels": 128, "mult": [1, 2, 2, 2], "blocks": 2},
}
QUICK_UNETS: dict[str, Any] = {"unet": {"name": "unet", "channels": 8, "mult": [1, 2]}}
FLOWS = {"mmd": "mmd", "svgd": "svgd", "kde-kl": "kl"}  # row name: preset
QUICK_FLOW_OVERRIDES = {"mmd": {"flow": {"points": 256}}}  # --quick: 256 MMD targets instead of 2,000


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float | None:
    return round(torch.cuda.max_memory_allocated(device) / 2 ** 30, 3) if device.type == "cuda" else None


def timed(step: Callable[[], Any], device: torch.device, steps: int, warmup: int) -> tuple[float, float, Any]:
    """(seconds of the first call, seconds per step over ``steps`` calls after ``warmup`` calls, last result)."""
    start = time.perf_counter()
    out = step()
    sync(device)
    first = time.perf_counter() - start
    for _ in range(max(0, warmup - 1)):
        out = step()
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        out = step()
    sync(device)
    return first, (time.perf_counter() - start) / steps, out


# -- EDM U-Net training --------------------------------------------------------------------------------
def image_model(network: Any, batch: int, resolution: int):
    from diffflow_core import build

    torch.manual_seed(0)
    images = torch.randn(max(4 * batch, 16), 3, resolution, resolution).clamp(-1, 1)
    return build(preset="edm", data=images, flow={"network": network})


def unet_case(net: str, network: Any, precision: str, compiled: bool, device: torch.device, batch: int,
              resolution: int, steps: int, warmup: int, backend: str = "inductor") -> dict[str, Any]:
    """Training steps of the EDM loss on one fixed device batch (no host sync inside the timed steps)."""
    from diffflow_core import Batch

    model = image_model(network, batch, resolution).to(device)
    flow, objective = model.flow, model.objective
    if compiled:
        flow.net = torch.compile(flow.net, backend=backend)
    params = [p for p in flow.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=2e-4, fused=device.type in ("cpu", "cuda"))
    x = model.data.train[:batch].to(device)
    generator = torch.Generator(device=device).manual_seed(0)
    autocast = precision == "bfloat16"

    def step() -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            loss = objective.loss(flow, Batch(x), generator).float()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach()

    reset_peak(device)
    first, per_step, loss = timed(step, device, steps, warmup)
    if not bool(torch.isfinite(loss)):
        raise FloatingPointError(f"loss is {float(loss)}")
    row = {"net": net, "precision": precision, "compiled": compiled, "batch": batch, "resolution": resolution,
           "parameters": sum(p.numel() for p in params), "steps_per_s": 1 / per_step,
           "images_per_s": batch / per_step, "ms_per_step": 1e3 * per_step, "first_step_s": first,
           "timed_steps": steps, "peak_gib": peak_gib(device), "loss": float(loss)}
    if compiled:
        row.update(compile_s=max(0.0, first - per_step), backend=backend)
    return row


def engine_case(device: torch.device, network: Any, batch: int, resolution: int, steps: int,
                warmup: int) -> dict[str, Any]:
    """The same training step through ``Model.fit`` (float32, eager): steps/s from its per-step records."""
    model = image_model(network, batch, resolution).to(device)
    history = model.fit(steps=warmup + steps, batch_size=batch, lr=2e-4, warmup=0, ema=0.999, log_every=1,
                        progress=False)
    seconds = [r["seconds"] for r in history.records if "seconds" in r]
    if len(seconds) < warmup + steps:
        raise RuntimeError(f"expected {warmup + steps} per-step records, got {len(seconds)}")
    per_step = (seconds[-1] - seconds[warmup - 1]) / steps
    return {"net": "unet", "precision": "float32", "compiled": False, "batch": batch, "resolution": resolution,
            "steps_per_s": 1 / per_step, "images_per_s": batch / per_step, "ms_per_step": 1e3 * per_step,
            "timed_steps": steps}


# -- particle flows ------------------------------------------------------------------------------------
def flow_case(name: str, preset: str, n: int, device: torch.device, steps: int, warmup: int,
              overrides: dict[str, Any]) -> dict[str, Any]:
    """Euler steps of a preset's particle flow on ``n`` particles (one drift evaluation each)."""
    from diffflow_core import Evaluator, SamplingContext, build
    from diffflow_core.data import load_dataset

    data = load_dataset({"name": "ring5", "n_train": 20_000, "n_test": 1000})
    model = build(preset=preset, data=data, **overrides)
    flow, smoother, solver = model.flow.to(device), model.smoother, model.solver
    generator = torch.Generator(device=device).manual_seed(0)
    x = flow.prior(n, generator=generator, device=device)
    times = flow.time_grid(model.config.sample.steps).to(device=device, dtype=x.dtype)
    state = {"x": x, "i": 0}
    drift = Evaluator(flow, smoother, SamplingContext(generator, steps=times.numel() - 1))

    def step() -> torch.Tensor:
        i = state["i"] % (times.numel() - 1)
        state["x"] = solver.step(drift, state["x"], times[i], times[i + 1])
        state["i"] += 1
        return state["x"]

    reset_peak(device)
    first, per_step, out = timed(step, device, steps, warmup)
    if not bool(torch.isfinite(out).all()):
        raise FloatingPointError("particles went non-finite")
    return {"flow": name, "preset": preset, "particles": n, "steps_per_s": 1 / per_step, "ms_per_step": 1e3 * per_step,
            "first_step_s": first, "timed_steps": steps, "peak_gib": peak_gib(device)}


# -- orchestration -------------------------------------------------------------------------------------
def settings(args: argparse.Namespace) -> dict[str, Any]:
    if args.quick:
        return {"unets": QUICK_UNETS, "batch": 4, "resolution": 8, "steps": 1, "warmup": 1, "engine_steps": 1,
                "particles": [128, 512], "flow_steps": 1, "flow_warmup": 1, "flow_overrides": QUICK_FLOW_OVERRIDES}
    return {"unets": UNETS, "batch": args.batch, "resolution": args.resolution, "steps": args.steps,
            "warmup": args.warmup, "engine_steps": args.steps, "particles": args.particles,
            "flow_steps": args.flow_steps, "flow_warmup": 1, "flow_overrides": {}}


def meta(device: torch.device, args: argparse.Namespace) -> dict[str, Any]:
    info: dict[str, Any] = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "host": platform.node(),
        "python": platform.python_version(), "torch": torch.__version__, "device": str(device),
        "quick": args.quick, "cpu_threads": torch.get_num_threads(),
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "matmul_tf32": torch.backends.cuda.matmul.allow_tf32, "cudnn_tf32": torch.backends.cudnn.allow_tf32}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update({"gpu": props.name, "capability": f"{props.major}.{props.minor}",
                     "gpu_memory_gib": round(props.total_memory / 2 ** 30, 1), "cuda": torch.version.cuda,
                     "cudnn": torch.backends.cudnn.version(), "bf16_supported": torch.cuda.is_bf16_supported()})
    return info


def run_guarded(fn: Callable[[], dict[str, Any]], label: dict[str, Any]) -> dict[str, Any]:
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - one failing case is recorded, the others still run
        return {**label, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(limit=4)}


def compiled_in_child(case: dict[str, Any], cap: float) -> dict[str, Any]:
    """Run one compiled U-Net case in a fresh process (its own session) and kill it after ``cap`` seconds."""
    command = [sys.executable, __file__, "--case", json.dumps(case)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    label = {k: case[k] for k in ("net", "precision")} | {"compiled": True}

    def stop(signum, frame):  # a SIGTERM to this process (e.g. `timeout`) ends the child's session too
        os.killpg(proc.pid, signal.SIGKILL)
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        out, err = proc.communicate(timeout=cap)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the child and its compile workers
        proc.communicate()
        return {**label, "skipped": f"compilation and timing ran past the {cap:.0f} s cap"}
    finally:
        signal.signal(signal.SIGTERM, previous)
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {**label, "error": f"child exited with {proc.returncode}: {err.strip()[-2000:]}"}
    return json.loads(lines[-1])


def child(case_json: str) -> None:
    case = json.loads(case_json)
    torch.backends.cudnn.benchmark = True
    device = torch.device(case.pop("device"))
    label = {"net": case["net"], "precision": case["precision"], "compiled": True}
    row = run_guarded(lambda: unet_case(device=device, compiled=True, **case), label)
    print(json.dumps(row), flush=True)


def write(path: Path, result: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(path)


def ratios(result: dict[str, Any]) -> dict[str, float]:
    """Speed-ups measured in this run: bf16 over fp32, compiled over eager, engine over hand-written loop."""
    rows = {(r["net"], r["precision"], r["compiled"]): r["steps_per_s"] for r in result["unet"] if "steps_per_s" in r}
    out: dict[str, float] = {}
    for (net, precision, compiled), speed in rows.items():
        if precision == "bfloat16" and (net, "float32", compiled) in rows:
            out[f"{net} {'compiled' if compiled else 'eager'}: bf16 / fp32"] = speed / rows[(net, "float32", compiled)]
        if compiled and (net, precision, False) in rows:
            out[f"{net} {precision}: compiled / eager"] = speed / rows[(net, precision, False)]
    engine = result.get("engine") or {}
    if "steps_per_s" in engine and ("unet", "float32", False) in rows:
        hand = rows[("unet", "float32", False)]
        out["unet float32: engine (Model.fit) / hand-written loop"] = engine["steps_per_s"] / hand
    return {k: round(v, 3) for k, v in out.items()}


def table(result: dict[str, Any]) -> str:
    def fmt(value: Any, digits: int = 1) -> str:
        return "-" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)

    lines = [f"device: {result['meta'].get('gpu', result['meta']['device'])}  torch {result['meta']['torch']}", "",
             f"{'U-Net training':<28}{'batch':>6}{'steps/s':>10}{'images/s':>11}{'ms/step':>10}{'compile s':>11}"
             f"{'peak GiB':>10}  note"]
    for r in result["unet"] + ([dict(result["engine"], net="engine: Model.fit")] if result.get("engine") else []):
        name = f"{r['net']} {r.get('precision', '')}{' compiled' if r.get('compiled') else ''}"
        note = r.get("skipped") or (r.get("error", "").splitlines() or [""])[0][:60]
        lines.append(f"{name:<28}{fmt(r.get('batch')):>6}{fmt(r.get('steps_per_s'), 2):>10}"
                     f"{fmt(r.get('images_per_s')):>11}{fmt(r.get('ms_per_step'), 2):>10}{fmt(r.get('compile_s')):>11}"
                     f"{fmt(r.get('peak_gib'), 2):>10}  {note}")
    lines += ["", f"{'particle flow (Euler step)':<28}{'N':>9}{'steps/s':>10}{'ms/step':>11}{'peak GiB':>10}  note"]
    for r in result["flows"]:
        note = r.get("skipped") or (r.get("error", "").splitlines() or [""])[0][:60]
        lines.append(f"{r['flow']:<28}{r['particles']:>9}{fmt(r.get('steps_per_s'), 2):>10}"
                     f"{fmt(r.get('ms_per_step'), 2):>11}{fmt(r.get('peak_gib'), 2):>10}  {note}")
    if result.get("ratios"):
        lines += ["", "ratios (this run):"] + [f"  {k}: {v:.3f}x" for k, v in result["ratios"].items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON output (default: gpu_throughput.json in the bench output folder)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, no compilation: a CPU run in seconds")
    parser.add_argument("--device", default=None, help="default: cuda; without one, the CPU with --quick")
    parser.add_argument("--budget", type=float, default=210.0,
                        help="seconds for the whole run: cases that would overrun it are skipped")
    parser.add_argument("--compile", dest="compile", action=argparse.BooleanOptionalAction, default=None,
                        help="time torch.compile'd U-Nets (default: on, off with --quick)")
    parser.add_argument("--compile-cap", type=float, default=100.0, help="seconds per compiled case (own process)")
    parser.add_argument("--compile-backend", default="inductor", help="torch.compile backend")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per case")
    parser.add_argument("--warmup", type=int, default=3, help="untimed training steps first")
    parser.add_argument("--particles", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--flow-steps", type=int, default=3, help="timed Euler steps per flow case")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # internal: one compiled case in a child process
    args = parser.parse_args(argv)
    if args.case:
        child(args.case)
        return None

    start = time.perf_counter()
    if args.device is None and not torch.cuda.is_available():
        print("no CUDA device: running --quick on the CPU")
        args.device, args.quick = "cpu", True
    device = torch.device(args.device or "cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here (use --device cpu --quick)")
    if args.out is None:
        from diffflow_core.commands.bench import output_dir

        args.out = output_dir() / "gpu_throughput.json"
    torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its kernels, as EDM's training does
    s = settings(args)
    compile_on = (not args.quick) if args.compile is None else args.compile
    result: dict[str, Any] = {"meta": meta(device, args), "settings": {k: v for k, v in s.items() if k != "unets"},
                              "unet": [], "engine": None, "flows": [], "ratios": {}}
    result["settings"].update(unets={k: v for k, v in s["unets"].items()}, compile=compile_on,
                              budget_s=args.budget, compile_cap_s=args.compile_cap,
                              compile_backend=args.compile_backend)

    def left() -> float:
        return args.budget - (time.perf_counter() - start)

    def record(section: str, row: dict[str, Any]) -> None:
        if section == "engine":
            result["engine"] = row
        else:
            result[section].append(row)
        result["ratios"] = ratios(result)
        result["meta"]["seconds"] = round(time.perf_counter() - start, 1)
        write(args.out, result)
        shown = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items() if k != "traceback"}
        print(f"[{time.perf_counter() - start:6.1f}s] {section}: {json.dumps(shown)}", flush=True)

    sizes = {"batch": s["batch"], "resolution": s["resolution"], "steps": s["steps"], "warmup": s["warmup"]}
    for net, network in s["unets"].items():
        for precision in ("float32", "bfloat16"):
            label = {"net": net, "precision": precision, "compiled": False}
            if left() < 15:
                record("unet", {**label, "skipped": "time budget"})
                continue
            record("unet", run_guarded(lambda: unet_case(net, network, precision, False, device, **sizes), label))
        if net == "unet":
            if left() < 15:
                record("engine", {"net": net, "skipped": "time budget"})
            else:
                record("engine", run_guarded(lambda: engine_case(device, network, s["batch"], s["resolution"],
                                                                 s["engine_steps"], s["warmup"]), {"net": net}))
    for n in s["particles"]:
        for name, preset in FLOWS.items():
            label = {"flow": name, "preset": preset, "particles": n}
            if left() < 10:
                record("flows", {**label, "skipped": "time budget"})
                continue
            overrides = s["flow_overrides"].get(name, {})
            record("flows", run_guarded(lambda: flow_case(name, preset, n, device, s["flow_steps"], s["flow_warmup"],
                                                          overrides), label))
    for net, network in s["unets"].items():
        for precision in ("float32", "bfloat16"):
            label = {"net": net, "precision": precision, "compiled": True}
            if not compile_on:
                record("unet", {**label, "skipped": "compilation off" + (" (--quick)" if args.quick else "")})
                continue
            cap = min(args.compile_cap, left() - 5)
            if cap < 30:
                record("unet", {**label, "skipped": f"time budget ({max(0.0, left()):.0f} s left)"})
                continue
            case = {"net": net, "network": network, "precision": precision, "device": str(device),
                    "backend": args.compile_backend, **sizes}
            record("unet", compiled_in_child(case, cap))
    result["meta"]["seconds"] = round(time.perf_counter() - start, 1)
    write(args.out, result)
    print()
    print(table(result))
    print(f"\nwrote {args.out}")
    return result


if __name__ == "__main__":
    main()
