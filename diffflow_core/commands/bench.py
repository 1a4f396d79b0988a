"""``diffflow bench [NAME ...] [--out DIR]``: list or run the benchmark scripts of ``benchmarks/``. Each prints
ratios against a baseline measured in the same run and writes its JSON (and pictures) to the bench output
folder of :func:`output_dir`, never into the source tree."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

#: Names the folder benchmark outputs go to; ``diffflow bench --out DIR`` sets it for the scripts it runs.
OUT_ENV = "DIFFFLOW_BENCH_OUT"


def benchmarks_dir() -> Path:
    return Path(__file__).resolve().parents[2] / "benchmarks"


def output_dir(folder: str | Path | None = None) -> Path:
    """The folder benchmark outputs go to, created: ``folder`` if given, else ``$DIFFFLOW_BENCH_OUT``, else
    ``diffflow/bench`` in the user's cache (``$XDG_CACHE_HOME``, default ``~/.cache``). The benchmark scripts
    write their results there and read earlier ones (merges) from there."""
    if folder is None and os.environ.get(OUT_ENV):
        folder = os.environ[OUT_ENV]
    if folder is None:
        cache = os.environ.get("XDG_CACHE_HOME", "")
        folder = Path(cache if os.path.isabs(cache) else Path.home() / ".cache") / "diffflow" / "bench"
    folder = Path(folder).expanduser().resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="list or run the benchmarks in benchmarks/")
    p.add_argument("names", nargs="*", help="benchmarks to run (default: all); see --list")
    p.add_argument("--list", action="store_true", help="only list the benchmarks")
    p.add_argument("--out", default=None, metavar="DIR",
                   help=f"folder for the benchmarks' outputs (default: ${OUT_ENV}, else ~/.cache/diffflow/bench)")
    p.set_defaults(func=run)


def run(args) -> int:
    from diffflow_core.errors import ConfigError, did_you_mean

    folder = benchmarks_dir()
    scripts = {p.stem: p for p in sorted(folder.glob("*.py")) if not p.name.startswith("_")} if folder.is_dir() else {}
    if not scripts:
        raise ConfigError(f"bench: no benchmark scripts in {folder} (benchmarks ship with the source checkout)")
    if args.list:
        for name, path in scripts.items():
            text = path.read_text()
            doc = text.split('"""')[1].strip().splitlines()[0] if '"""' in text else ""
            print(f"{name:24s} {doc}")
        return 0
    for name in args.names:
        if name not in scripts:
            raise ConfigError(f"bench: unknown benchmark {name!r}{did_you_mean(name, scripts)}; "
                              f"available: {', '.join(scripts)}")
    try:
        out = output_dir(args.out)
    except (FileExistsError, NotADirectoryError) as exc:
        raise ConfigError(f"bench: output folder {exc.filename}: expected a folder, a file is in the way "
                          "(choose another with --out DIR)") from None
    env = {**os.environ, OUT_ENV: str(out)}
    status = 0
    for name in args.names or list(scripts):
        print(f"== {name}", flush=True)
        status = max(status, subprocess.call([sys.executable, str(scripts[name])], env=env))
    print(f"bench outputs: {out}")
    return status
