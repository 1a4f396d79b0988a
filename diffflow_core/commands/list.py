"""``diffflow list [KIND] [--json]``: registered components with provider and summary.

``diffflow list networks`` also builds each network at its example input and reports its parameter count and
forward FLOPs (:func:`diffflow_core.networks.profile`); listing every kind skips that, to stay instant."""
from __future__ import annotations

import json
from functools import partial

from diffflow_core.commands.plugins import _table, shorten
from diffflow_core.hookspecs import KINDS
from diffflow_core.registry import guarded


def add_parser(sub) -> None:
    p = sub.add_parser("list", help="list registered components (all kinds, or one; networks with their size and "
                                    "forward cost)")
    p.add_argument("kind", nargs="?", choices=KINDS, help="only this kind")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def run(args) -> int:
    from diffflow_core.plugins import registry

    kinds = [args.kind] if args.kind else list(KINDS)
    entries = [e for kind in kinds for e in registry(kind).list()]
    if args.kind == "networks":
        return _networks(entries, args.json)
    if args.json:
        print(json.dumps([e.describe() for e in entries], indent=2))
        return 0
    rows = [("kind", "name", "plugin", "version", "summary")]
    rows += [(e.kind, e.name, e.plugin, e.version, shorten(e.summary, 70)) for e in entries]
    print(_table(rows))
    return 0


def _networks(entries: list, as_json: bool) -> int:
    """The networks with their parameter count and forward GFLOPs at their example input; a (third-party)
    network that cannot be built there is listed with the first line of its error instead."""
    described = []
    for entry in entries:
        size, error = guarded(partial(_measure, entry))
        described.append({**entry.describe(), **(size if error is None else
                                                 {"error": f"{type(error).__name__}: {error}".splitlines()[0]})})
    if as_json:
        print(json.dumps(described, indent=2))
        return 0
    rows = [("name", "plugin", "input", "params", "GFLOPs", "summary")]
    for row in described:
        if "error" in row:
            rows.append((row["name"], row["plugin"], "-", "-", "-", shorten(row["error"], 60)))
        else:
            rows.append((row["name"], row["plugin"], "x".join(map(str, row["input"])), f"{row['parameters']:,}",
                         f"{row['forward_flops'] / 1e9:.3g}", shorten(row["summary"], 60)))
    print(_table(rows))
    return 0


def _measure(entry) -> dict:
    """:func:`diffflow_core.networks.profile` of the entry's network (torch is imported here, not at start-up)."""
    from diffflow_core.networks import profile

    return profile(entry.load())
