"""The ``diffflow`` command. Each subcommand lives in ``diffflow_core.commands.<name>`` and exposes
``add_parser(subparsers)`` that sets ``func`` on its parser."""
from __future__ import annotations

import argparse
import importlib
import sys

from diffflow_core.errors import DiffflowError

#: Subcommand modules, in the order ``diffflow --help`` lists them.
COMMANDS = ("run", "train", "sample", "eval", "presets", "plugins", "list", "bench")


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="diffflow", description="Generative particle models by named parts.")
    sub = root.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"diffflow_core.commands.{name}")
        except Exception as exc:  # noqa: BLE001 - one broken command must not take `diffflow plugins` down
            print(f"diffflow: warning: command {name!r} is unavailable: {type(exc).__name__}: {exc}", file=sys.stderr)
            continue
        module.add_parser(sub)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if not getattr(args, "func", None):
        parser().print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except DiffflowError as exc:
        print(f"diffflow: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
