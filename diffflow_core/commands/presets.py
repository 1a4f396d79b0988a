"""``diffflow presets [NAME] [--json]``: the registered recipes, or one recipe's full config."""
from __future__ import annotations

import json


def add_parser(sub) -> None:
    p = sub.add_parser("presets", help="list presets, or show one preset's config")
    p.add_argument("name", nargs="?", help="show this preset's config")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def run(args) -> int:
    from diffflow_core.commands.plugins import _table, shorten
    from diffflow_core.plugins import registry

    presets = registry("presets")
    if args.name:
        print(json.dumps(presets.get(args.name), indent=2))
        return 0
    entries = presets.list()
    if args.json:
        print(json.dumps([e.describe() for e in entries], indent=2))
        return 0
    rows = [("preset", "plugin", "summary")] + [(e.name, e.plugin, shorten(e.summary, 90)) for e in entries]
    print(_table(rows))
    return 0
