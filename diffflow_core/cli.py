"""The ``diffflow`` command. Each subcommand lives in ``diffflow_core.commands.<name>`` and exposes
``add_parser(subparsers)`` that sets ``func`` on its parser."""
from __future__ import annotations

import argparse
import errno
import importlib
import os
import signal
import sys
import threading
from pathlib import Path

from diffflow_core.errors import DiffflowError, interface

#: Subcommand modules, in the order ``diffflow --help`` lists them.
COMMANDS = ("run", "train", "sample", "eval", "presets", "plugins", "list", "bench")


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="diffflow", description="Generative particle models by named parts.")
    root.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = root.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"diffflow_core.commands.{name}")
        except Exception as exc:  # noqa: BLE001 - one broken command must not take `diffflow plugins` down
            print(f"diffflow: warning: command {name!r} is unavailable: {type(exc).__name__}: {exc}", file=sys.stderr)
            continue
        module.add_parser(sub)
    return root


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("diffflow-core")
    except PackageNotFoundError:
        return "unknown (not installed)"


def main(argv: list[str] | None = None) -> int:
    """Run one command. A user's mistake (a bad flag, field, file or value), a diverging run and a failing disk
    end in one line ``diffflow: error: ...`` and exit code 2, never a traceback; Ctrl-C exits 130 and SIGTERM 143,
    both releasing the run folder and naming the checkpoint to resume from."""
    args = parser().parse_args(argv)
    if not getattr(args, "func", None):
        parser().print_help()
        return 0
    in_main_thread = threading.current_thread() is threading.main_thread()  # only it may set signal handlers
    previous = signal.signal(signal.SIGTERM, _terminate) if in_main_thread else None
    try:
        with interface("cli"):
            return int(args.func(args) or 0)
    except Terminated:
        print(f"diffflow: terminated{_resume_hint(args)}", file=sys.stderr)
        return 143
    except (DiffflowError, FloatingPointError) as exc:
        return _fail(str(exc))
    except BrokenPipeError:  # the reader went away (`diffflow list | head`): not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:
        what = f"{exc.filename}: " if exc.filename else ""
        reason = "the disk is full" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc))
        return _fail(what + reason)
    except KeyboardInterrupt:
        print(f"diffflow: interrupted{_resume_hint(args)}", file=sys.stderr)
        return 130
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


class Terminated(BaseException):
    """SIGTERM during a command: unwinds like Ctrl-C, so a run folder's lock and temporary files are released."""


def _terminate(signum, frame) -> None:
    raise Terminated


def _resume_hint(args) -> str:
    """'; the last checkpoint is ...' when the command's run folder holds one, else ''."""
    checkpoint = Path(getattr(args, "out", None) or "", "checkpoint.pt")
    if not getattr(args, "out", None) or not checkpoint.is_file():
        return ""
    return f"; the last checkpoint is {checkpoint} (continue with 'diffflow train --resume --out {checkpoint.parent}')"


def _fail(message: str) -> int:
    print(f"diffflow: error: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
