"""``diffflow plugins [--json]``: every plugin with distribution, version, status, hooks and error.

Under ``DIFFFLOW_STRICT_PLUGINS`` the listing is printed in full first (it is the diagnosis), then the command
fails with the strict-mode error.
"""
from __future__ import annotations

import json
import textwrap


def add_parser(sub) -> None:
    p = sub.add_parser("plugins", help="list installed plugins and their status")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def run(args) -> int:
    from diffflow_core.plugins import manager

    mgr = manager()
    infos = mgr.infos()
    if args.json:
        print(json.dumps([i.as_dict() for i in infos], indent=2))
    else:
        _print_table(infos)
    mgr.load()  # strict mode: the listing is out, now the error (diffflow: error: ..., exit 2)
    return 0


def _print_table(infos) -> None:
    rows = [("plugin", "distribution", "version", "status", "components", "hooks")]
    rows += [(i.name, i.distribution, i.version, i.status, str(i.components),
              ",".join(h.removeprefix("register_") for h in i.hooks)) for i in infos]
    print(_table(rows))
    for info in infos:
        if info.error:
            print(f"\n{info.name}: {info.error}")


def shorten(text: str, width: int) -> str:
    """``text`` cut at a word boundary to at most ``width`` characters, with an ellipsis when cut."""
    return textwrap.shorten(text, width, placeholder=" ...")


def _table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)
