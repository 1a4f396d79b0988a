"""Measured results live in docs/benchmarks/, not in the package sources (issue 19, item 10).

A number a run produced (a W2/floor ratio, an NLL, a timing, a speed-up) goes stale in a docstring or a comment:
nothing re-measures it there. The sources state the design reason and point to the docs page that holds the
number, its command and its date. This scans the comments and docstrings (and ``#:`` attribute docs) of every
package: ``diffflow_core``, ``plugins/*`` and ``contrib/*``, not their tests and not ``benchmarks/``. The
patterns are the phrasings that marked measured results; definitions, defaults and constants (``4x512 MLP``,
``5 minutes`` of a default timeout, ``693 for 0.999``) do not match them (checked below).
"""
from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = [ROOT / "diffflow_core", *sorted((ROOT / "plugins").glob("*/")), *sorted((ROOT / "contrib").glob("*/"))]
SKIPPED_PARTS = {"tests", "benchmarks", "__pycache__", ".venv", "build"}

_NUM = r"(?<![\w/.^-])\d[\d,]*(?:\.\d+)?(?![\w/])"  # a stand-alone number, not part of ring5, 4x512 or docs/x2

#: (name, pattern) of the phrasings that state a measured result.
PATTERNS: list[tuple[str, re.Pattern]] = [(name, re.compile(pattern, re.IGNORECASE)) for name, pattern in [
    # a number after "measured" and before any docs/ reference or quoted section title
    ("'measured' followed by a number", rf"\bmeasured\b(?:(?!docs/)[^\"])*?{_NUM}"),
    ("a ratio to a floor", r"\d(?:\.\d+)?\s*x\s*(?:the\s+)?(?:[\w-]+\s+)?floor\b"),
    ("a W2/floor value", r"W2\s*/\s*floor\s*(?:of\s+|was\s+|=\s*)?\d"),
    ("a score", r"\bscored\s+(?:[\w/]+\s+){0,2}\d"),
    ("a speed-up", r"\d(?:\.\d+)?\s*x\s+(?:faster|slower|speed-?up|the\s+(?:float32\s+)?time)\b"),
    ("timings compared", r"\d(?:\.\d+)?\s*(?:ms|s)?\s+(?:vs\.?|against)\s+\d+(?:\.\d+)?\s*(?:ms|s|seconds)\b"),
    ("a run's duration", r"\bin\s+\d+(?:\.\d+)?\s+(?:minutes|hours)\b"),
    ("a value over seeds", rf"{_NUM}\s+over\s+\d+\s+seeds\b"),
    ("a measured spread", r"\b(?:varies|spread)\b.*?\d+(?:\.\d+)?\s*%"),
    ("a memory growth", r"\d+(?:\.\d+)?\s*(?:MB|MiB|GB|GiB)\)?\s+(?:per|a|each)\b"),
    ("an NLL, NELBO or FD value", r"\b(?:NLL|NELBO|FD|Fr[ée]chet distance)\s+(?:of\s+)?\d+\.\d+"),
    ("a bits/dim or nats value", r"\d\.\d+\s*(?:bits/dim|nats)\b"),
]]


def _sources() -> list[Path]:
    files = []
    for package in PACKAGES:
        for path in sorted(package.rglob("*.py")):
            if not SKIPPED_PARTS.intersection(path.relative_to(ROOT).parts):
                files.append(path)
    return files


def _prose(source: str) -> list[tuple[int, str]]:
    """``(line, text)`` of every comment and every docstring line (module, class, function, ``#:`` attribute docs
    and bare string statements) of a Python source."""
    lines = [(tok.start[0], tok.string) for tok in tokenize.generate_tokens(io.StringIO(source).readline)
             if tok.type == tokenize.COMMENT]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            lines += [(node.lineno + i, text) for i, text in enumerate(node.value.value.splitlines())]
    return sorted(lines)


def measured_claims(text: str) -> list[str]:
    """Names of the patterns that ``text`` matches."""
    return [name for name, pattern in PATTERNS if pattern.search(text)]


def test_scans_the_packages():
    files = {p.relative_to(ROOT).as_posix() for p in _sources()}
    assert "diffflow_core/config.py" in files and "plugins/diffflow-score/diffflow_score/presets.py" in files
    assert "contrib/diffflow-example/diffflow_example/solvers.py" in files
    assert not any("/tests/" in f or f.startswith("benchmarks/") for f in files)


def test_no_measured_numbers_in_docstrings_or_comments():
    hits = []
    for path in _sources():
        for line, text in _prose(path.read_text(encoding="utf-8")):
            for name in measured_claims(text):
                hits.append(f"{path.relative_to(ROOT).as_posix()}:{line}: {name}: {text.strip()}")
    assert not hits, ("measured numbers in the sources; move each to its docs/benchmarks/ page (with where it came "
                      "from) and state the design reason here, pointing to that page:\n" + "\n".join(hits))


@pytest.mark.parametrize("text", [  # the phrasings removed from the sources in issue 19
    "float32 master weights; measured 0.65x the float32 time of a 4x512 MLP pass on a CPU with AMX",
    "Gaussian law. Measured on ring5 with the exact score, Heun at 17 NFE: 1.57 x floor for [0.002, 80], 0.91 for",
    "5,000 steps with EMA 0.999 gave W2/floor 0.83 on ring5 at 100 Heun steps in 8 minutes of one shared core.",
    "a stationary point (measured on ring5: the NELBO did not move in 2,500 steps).",
    "``sigma`` times it (sigma reaches 150 for VP, 50 for VE); a short run on ring5 scored W2/floor 12 (VP) and 6",
    "parameters) reached a Fréchet distance of 1.8-1.97x the train-vs-test floor in 5,000 iterations at about",
    "half the 32-channel U-Net's cost per step (0.68 vs 1.35 s measured side by side; docs/benchmarks/score.md).",
    "Adam per player; the fused kernel (one pass over all tensors, about 4x faster than the per-tensor",
    "at the same ``n``, each averaged over seeds (a single 2,000-point W2 on ring5 varies by about +/-15%). A",
    "perfect sampler scores slightly below 1 on average (0.95 over 30 seeds on ring5 at n = 2,000).",
    "perfect sampler has a relative spread of about 25% (mostly from the multinomial mode shares), so a 3-seed",
    "grew by about one block (~16 MB) per block at N = 100,000 (``benchmarks/mmd_scale.py``).",
    "learned F on digits, test NELBO 8.8 vs 2.8 bits/dim",
])
def test_patterns_catch_measured_results(text):
    assert measured_claims(text), text


@pytest.mark.parametrize("text", [  # definitions, defaults and constants stay
    "The ``unet`` for image-shaped particles ``[C, H, W]`` when registered, else GPM's 4x512 Fourier MLP.",
    "Images of at most 16x16 pixels get 16 base channels instead of 32",
    "the EMA's final per-step decay (0 = no EMA); its half-life in steps is ln 0.5 / ln ema (693 for 0.999)",
    "Timeouts: a rank waits at most ``DIFFFLOW_DDP_TIMEOUT`` seconds (default :data:`DEFAULT_TIMEOUT`, 5 minutes,",
    "dimension-free distances (sliced W2, MMD^2, energy) to held-out data, each beside its data-vs-data floor",
    "(``distances``; over 3 sampling seeds for vector data, one for images); 2-D data: exact W2 over the",
    "Sample size of the distances to the data (MMD and energy cost O(n^2); W2 uses up to 2,000 points).",
    "``order`` *measured* on a closed-form problem (:func:`fitted_order`); a solver that requires more of a flow",
    "Measured (docs/benchmarks/threads.md): while another process keeps one of two cores busy, two threads made",
    "a stationary point (on ring5 the NELBO did not move: docs/benchmarks/ndm.md, \"Earlier runs\").",
    "scores slightly below 1 on average (the ring5 values are in docs/datasets-and-metrics.md, \"The W2 floor\").",
    "GPM's reference toy (SPEC §2.9): 5 equal-weight Gaussians, std 0.5, centres radius 3 at 2 pi k / 5.",
    "Axis limits holding the 0.5%-99.5% quantiles of the columns, with a margin (as :func:`_limits`).",
    "1000 x (data's max |x| + 1)): the sampler or the training diverged, though the run itself succeeded.",
    "A one-line warning on stderr when a logged loss ended over 100 x its first logged value (a positive",
    "marginal off by more than 0.1%) is recomputed in the log domain, which is exact there but slower.",
    "scored worse). ``sigma_min``/``sigma_max``/``rho`` set eq 28; ``w_d``/``w_g`` weigh the two scores.",
    "Default number of pairwise entries held at once (about 32 MiB in float64).",
    'model alike (measured in docs/benchmarks.md, "Why the sampling range matters at 17 NFE").',
    "Batch mean per dimension (nats) of the NELBO with the ``weighting``'s diffusion term, on dequantised",
])
def test_patterns_leave_definitions_alone(text):
    assert not measured_claims(text), (text, measured_claims(text))
