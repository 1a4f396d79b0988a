#!/usr/bin/env bash
# GPU check (issue 21): on a machine that already has torch with CUDA, install diffflow without network, print
# the device, run every test marked `gpu`, then the throughput benchmark (benchmarks/gpu_throughput.py), all
# inside 8 minutes. Each phase runs under its own `timeout` and reports its wall time, so a hang costs only that
# phase's share. Everything it prints, the JUnit XML and the benchmark JSON go to $OUT (default
# /tmp/diffflow-gpu-check); the exit status is non-zero when a phase failed.
#
#   bash scripts/gpu-check.sh                 # PYTHON=/path/to/python to choose the interpreter
#
# Installation: wheels found in .whl/ (dependencies missing on the machine, e.g. POT or pillow) are installed
# first, offline; then the kernel, plugins/* and contrib/* as editable installs with
# `pip install --no-deps --no-build-isolation --no-index`, which needs setuptools >= 70.1 (it builds PEP 660
# editable wheels without the `wheel` package). Where that is impossible (older setuptools, no pip, an
# externally managed interpreter) the sources go on PYTHONPATH and a hand-written *.dist-info per package
# declares its entry points, which is all plugin discovery (importlib.metadata) reads.
#
# Phase limits (seconds): nvidia-smi 15, device 30, install 60, gpu tests 120, throughput 230 (the benchmark
# budgets 205 s of it and skips what would overrun): 455 s at most, with the steps between about 7.75 minutes.
#
# A dry run on a CPU machine (it fails the device phase, skips the gpu tests, times toy sizes) checks the script:
#   DIFFFLOW_CHECK_INSTALL=shim GPU_CHECK_BENCH_ARGS="--quick --device cpu" bash scripts/gpu-check.sh
# (DIFFFLOW_CHECK_INSTALL=shim skips pip, leaving an existing environment untouched.)
set -uo pipefail
SELF="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
cd "$(dirname "$SELF")/.."
ROOT=$(pwd)
OUT=${OUT:-/tmp/diffflow-gpu-check}
# the install phase (a child process) leaves the PYTHONPATH of the fallback in $STATE/env.sh for the later phases
export DIFFFLOW_CHECK_STATE=${DIFFFLOW_CHECK_STATE:-$(mktemp -d /tmp/diffflow-gpu-check-state.XXXXXX)}
STATE=$DIFFFLOW_CHECK_STATE
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg PIP_DISABLE_PIP_VERSION_CHECK=1

if [ -z "${PYTHON:-}" ]; then
  for candidate in python python3; do
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c "import torch" >/dev/null 2>&1; then
      PYTHON=$(command -v "$candidate")
      break
    fi
  done
fi
export PYTHON=${PYTHON:-python3}

# -- installation (run as `gpu-check.sh __install`, inside the install phase's timeout) ------------------------
write_shim() {  # sources on PYTHONPATH + one *.dist-info per package (metadata, entry points)
  "$PYTHON" - "$ROOT" "$STATE/site" "$STATE/env.sh" <<'PY'
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pip vendors the same parser
    from pip._vendor import tomli as tomllib

root, site, env = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
site.mkdir(parents=True, exist_ok=True)
paths = []
for pyproject in [root / "pyproject.toml", *sorted(root.glob("plugins/*/pyproject.toml")),
                  *sorted(root.glob("contrib/*/pyproject.toml"))]:
    project = tomllib.loads(pyproject.read_text())["project"]
    name, version = project["name"], project["version"]
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    groups = dict(project.get("entry-points", {}))
    if project.get("scripts"):
        groups["console_scripts"] = project["scripts"]
    (info / "entry_points.txt").write_text("".join(
        f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in entries.items()) + "\n" for group, entries in groups.items()))
    paths.append(str(pyproject.parent))
    print(f"shim: {name} {version} from {pyproject.parent}")
paths.append(str(site))
env.write_text(f"export PYTHONPATH={':'.join(paths)}${{PYTHONPATH:+:$PYTHONPATH}}\n")
PY
}

install() {
  shopt -s nullglob
  local wheels=(.whl/*.whl)
  if [ ${#wheels[@]} -gt 0 ]; then
    echo "installing ${#wheels[@]} wheel(s) from .whl/: ${wheels[*]}"
    "$PYTHON" -m pip install --no-index --no-deps "${wheels[@]}" || echo "WARNING: the wheels in .whl/ did not all install"
  fi
  local args=(-e .) dir
  for dir in plugins/*/ contrib/*/; do
    [ -f "$dir/pyproject.toml" ] && args+=(-e "$dir")
  done
  local installed=no
  if [ "${DIFFFLOW_CHECK_INSTALL:-auto}" = shim ]; then
    echo "DIFFFLOW_CHECK_INSTALL=shim: no pip install"
  elif "$PYTHON" -c "import sys, setuptools; v = tuple(int(p) for p in setuptools.__version__.split('.')[:2]); sys.exit(v < (70, 1))" 2>/dev/null; then
    echo "pip install --no-deps --no-build-isolation --no-index ${args[*]}"
    if "$PYTHON" -m pip install -q --no-deps --no-build-isolation --no-index "${args[@]}"; then
      installed=pip
    else
      echo "WARNING: pip install failed (see above); falling back to PYTHONPATH + dist-info shims"
    fi
  else
    echo "WARNING: setuptools >= 70.1 is missing (needed for editable installs without build isolation);" \
         "falling back to PYTHONPATH + dist-info shims"
  fi
  if [ "$installed" = no ]; then
    write_shim || return 1
    # shellcheck disable=SC1091
    source "$STATE/env.sh"
  fi
  "$PYTHON" - <<'PY'
import importlib

missing = []
for module in ("numpy", "pluggy", "attrs", "tqdm", "matplotlib", "sklearn", "scipy", "pytest", "ot", "PIL"):
    try:
        importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001
        missing.append(f"{module} ({type(exc).__name__})")
print("missing dependencies:", ", ".join(missing) or "none",
      "(POT 'ot' is needed only by the exact W2 metric, pillow only by GIF/PNG writing)" if missing else "")

from diffflow_core import plugins

failed = []
for info in plugins.manager().infos():
    dist = getattr(info, "distribution", getattr(info, "dist", "?"))
    error = (getattr(info, "error", None) or "").splitlines()[:1]
    print(f"plugin {info.name:<14} {dist} {info.version}: {info.status}", *error)
    if info.status == "failed":
        failed.append(info.name)
raise SystemExit(f"plugins failed to load: {failed}" if failed else 0)
PY
}

if [ "${1:-}" = "__install" ]; then
  install
  exit $?
fi

# -- the phases ----------------------------------------------------------------------------------------------
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu-check.log") 2>&1
TEE_PID=$!
SUMMARY=()
FAILED=0
now() { date +%s.%N; }

phase() {  # phase NAME LIMIT_SECONDS COMMAND...: run under timeout, report status and wall time
  local name=$1 limit=$2
  shift 2
  echo
  echo "=== phase $name (limit ${limit}s) $(date -u +%H:%M:%S)"
  local start rc status wall
  start=$(now)
  timeout --kill-after=5 "$limit" "$@"
  rc=$?
  wall=$(awk -v a="$start" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }')
  status=ok
  if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then status=timeout; elif [ $rc -ne 0 ]; then status=failed; fi
  echo "=== phase $name: $status (exit $rc) in ${wall}s of ${limit}s"
  SUMMARY+=("$name $status $rc $wall $limit")
  [ $rc -eq 0 ] || FAILED=1
  return $rc
}

echo "diffflow GPU check: $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname), repository $ROOT"
echo "commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)" \
     "(uncommitted changes: $(git -C "$ROOT" status --porcelain 2>/dev/null | wc -l | tr -d ' ') files)"
echo "python: $PYTHON"
echo "output: $OUT"
timeout 15 nvidia-smi || echo "nvidia-smi: unavailable or failed"

phase device 30 "$PYTHON" - <<'PY'
import platform
import sys

import torch

print(f"python {platform.python_version()}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
      f"cuDNN {torch.backends.cudnn.version()}")
if not torch.cuda.is_available():
    sys.exit("torch sees no CUDA device: the gpu tests would all skip")
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    print(f"cuda:{i} {p.name}, capability {p.major}.{p.minor}, {p.total_memory / 2**30:.1f} GiB, "
          f"{p.multi_processor_count} SMs")
print(f"bf16 supported: {torch.cuda.is_bf16_supported()}, TF32 matmul: {torch.backends.cuda.matmul.allow_tf32}, "
      f"TF32 cuDNN: {torch.backends.cudnn.allow_tf32}")
a = torch.randn(1024, 1024, device="cuda")
torch.testing.assert_close((a @ a.T).cpu(), a.cpu() @ a.cpu().T, rtol=1e-3, atol=1e-2)
print("a 1024x1024 matmul on the GPU matches the CPU")
PY

phase install 60 bash "$SELF" __install
[ -f "$STATE/env.sh" ] && source "$STATE/env.sh" && echo "using PYTHONPATH=$PYTHONPATH"
"$PYTHON" -m pip list 2>/dev/null | grep -iE '^(torch|numpy|scipy|pot|pillow|pluggy|attrs|matplotlib|scikit-learn|tqdm|pytest|setuptools|diffflow)' || true

mapfile -t GPU_TESTS < <(grep -rlE --include='test_*.py' 'pytest\.mark\.gpu|mark\.gpu' tests plugins contrib | sort)
echo "test files with gpu-marked tests: ${GPU_TESTS[*]}"
phase gpu-tests 120 "$PYTHON" -m pytest -m gpu -q -p no:xdist -p no:cacheprovider --continue-on-collection-errors \
  --durations=15 --junitxml="$OUT/gpu-tests.xml" "${GPU_TESTS[@]}"
"$PYTHON" - "$OUT/gpu-tests.xml" <<'PY' || true
import sys
import xml.etree.ElementTree as ET

suite = ET.parse(sys.argv[1]).getroot()
suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
print("gpu tests:", ", ".join(f"{k} {suite.get(k)}" for k in ("tests", "failures", "errors", "skipped")))
PY

# shellcheck disable=SC2086
phase throughput 230 "$PYTHON" benchmarks/gpu_throughput.py --out "$OUT/gpu_throughput.json" --budget 205 \
  ${GPU_CHECK_BENCH_ARGS:-}

echo
echo "=== summary"
printf '%-12s %-8s %5s %9s %7s\n' phase status exit seconds limit
for row in "${SUMMARY[@]}"; do
  # shellcheck disable=SC2086
  printf '%-12s %-8s %5s %9s %7s\n' $row
done
"$PYTHON" - "$OUT/summary.json" "${SUMMARY[@]}" <<'PY'
import json
import sys

phases = [dict(zip(("phase", "status", "exit", "seconds", "limit"), row.split())) for row in sys.argv[2:]]
for p in phases:
    p.update(exit=int(p["exit"]), seconds=float(p["seconds"]), limit=int(p["limit"]))
json.dump({"phases": phases, "seconds": round(sum(p["seconds"] for p in phases), 1)}, open(sys.argv[1], "w"), indent=2)
print(f"total {sum(p['seconds'] for p in phases):.1f}s; files in {sys.argv[1].rsplit('/', 1)[0]}")
PY
rm -rf "$STATE"
exec >&- 2>&-
wait "$TEE_PID" 2>/dev/null  # the log is complete before the caller collects $OUT
exit $FAILED
