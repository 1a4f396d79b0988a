"""``diffflow bench [NAME ...]``: list or run the benchmark scripts of ``benchmarks/`` (each prints ratios
against a baseline measured in the same run and writes ``benchmarks/results/<name>.json``)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def benchmarks_dir() -> Path:
    return Path(__file__).resolve().parents[2] / "benchmarks"


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="list or run the benchmarks in benchmarks/")
    p.add_argument("names", nargs="*", help="benchmarks to run (default: all); see --list")
    p.add_argument("--list", action="store_true", help="only list the benchmarks")
    p.set_defaults(func=run)


def run(args) -> int:
    from diffflow_core.errors import ConfigError, did_you_mean

    folder = benchmarks_dir()
    scripts = {p.stem: p for p in sorted(folder.glob("*.py")) if not p.name.startswith("_")} if folder.is_dir() else {}
    if not scripts:
        raise ConfigError(f"bench: no benchmark scripts in {folder} (benchmarks ship with the source checkout)")
    if args.list:
        for name, path in scripts.items():
            doc = path.read_text().split('"""')[1].strip().splitlines()[0] if '"""' in path.read_text() else ""
            print(f"{name:24s} {doc}")
        return 0
    for name in args.names:
        if name not in scripts:
            raise ConfigError(f"bench: unknown benchmark {name!r}{did_you_mean(name, scripts)}; "
                              f"available: {', '.join(scripts)}")
    status = 0
    for name in args.names or list(scripts):
        print(f"== {name}", flush=True)
        status = max(status, subprocess.call([sys.executable, str(scripts[name])]))
    return status
