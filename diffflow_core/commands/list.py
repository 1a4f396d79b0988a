"""``diffflow list [KIND] [--json]``: registered components with provider and summary."""
from __future__ import annotations

import json

from diffflow_core.commands.plugins import _table, shorten
from diffflow_core.hookspecs import KINDS


def add_parser(sub) -> None:
    p = sub.add_parser("list", help="list registered components (all kinds, or one)")
    p.add_argument("kind", nargs="?", choices=KINDS, help="only this kind")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def run(args) -> int:
    from diffflow_core.plugins import registry

    kinds = [args.kind] if args.kind else list(KINDS)
    entries = [e for kind in kinds for e in registry(kind).list()]
    if args.json:
        print(json.dumps([e.describe() for e in entries], indent=2))
        return 0
    rows = [("kind", "name", "plugin", "version", "summary")]
    rows += [(e.kind, e.name, e.plugin, e.version, shorten(e.summary, 70)) for e in entries]
    print(_table(rows))
    return 0
