"""The documentation runs: every snippet of README.md and docs/**/*.md is executed or checked against the code.

* ```python blocks: a page's blocks run in order in one namespace, in a temporary working directory; the
  ``test_*`` functions they define are then called (pytest fixtures passed by argument name).
* ```toml blocks: parsed; a diffflow config (anything but a ``pyproject.toml``) is built with ``build``.
* ```bash / ```console / unlabelled blocks: every ``diffflow ...`` command (also ``python -m diffflow_core.cli``
  and ``torchrun ... -m diffflow_core.cli``) parses with the real argparse parser, and the presets, datasets,
  benchmarks and repository config files it names exist. The cheap ones (``presets``, ``list``, ``plugins``,
  ``bench --list``, ``--help``) run through ``cli.main``; the output a console block shows must appear in order.
* inline ```diffflow ...``` code spans without placeholders parse the same way.
* names in tables (columns ``preset``/``flow``/``objective``/``smoother``/``solver``, ``kind``+``name`` rows)
  and in prose (``preset `x```), ``**Parameters**`` lists and ``name(param=default)`` spans match the registries
  and constructors; preset tables' noise ranges and sample steps match the presets; architecture.md's table of
  systems names every registered component.
* links and anchors resolve; backticked repository paths, ``diffflow_*`` Python objects and cited tests exist;
  a short ``diffflow run`` writes exactly the files the README and the user guide list.

Markers, an HTML comment on the line(s) just before a fence (use them sparingly, say why):

    <!-- doctest: slow -->            the page's python runs only in the slow suite (see FAST for its cheap twin)
    <!-- doctest: skip (reason) -->   an illustrative or partial block, never run
"""
from __future__ import annotations

import ast
import contextlib
import inspect
import io
import re
import shlex
import tomllib
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md"] + sorted((ROOT / "docs").rglob("*.md"))

#: Cheap twins of the pages whose python is marked slow: (documented text, substitute) pairs applied to the
#: page's python before it runs unmarked. Each documented text must occur (a stale twin fails, never skips).
FAST: dict[str, list[tuple[str, str]]] = {
    "docs/user-guide.md": [('train={"steps": 2000}', 'train={"steps": 30}'),
                           ("model.data.test[:1000], steps=256", "model.data.test[:50], steps=8"),
                           ("checkpoint_every=500, eval_every=500", "checkpoint_every=10, eval_every=10"),
                           ("resume=True, steps=4000", "resume=True, steps=40")],
    "docs/flows/ndm.md": [('train={"steps": 2000}', 'train={"steps": 20}'),
                          ("sample(2000, steps=100)", "sample(200, steps=10)"),
                          ('sample(2000, steps=100, solver="ndm-ddpm")', 'sample(200, steps=10, solver="ndm-ddpm")'),
                          ("model.data.test[:500], steps=100", "model.data.test[:50], steps=10")],
    "docs/flows/velocity.md": [("model.fit()", "model.fit(steps=20)"), ("digits.fit()", "digits.fit(steps=5)")],
}

#: Claims the pages' comments make about their snippets' results, checked after the page ran (twins included).
CLAIMS: dict[str, str] = {
    "README.md": "tuple(samples.x.shape) == (2000, 2) and samples.nfe == 35 and tuple(x.shape) == (500, 2)",
    "docs/user-guide.md": "tuple(samples.x.shape) == (2000, 2) and samples.nfe == 35",
    "docs/flows/ndm.md": "ancestral.x.shape == samples.x.shape",
    "docs/flows/velocity.md": "tuple(x.shape) == (2000, 2) and tuple(sevens.x.shape) == (100, 1, 8, 8)",
}

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>```+|~~~+)[ \t]*(?P<lang>[\w+-]*)[^\n]*$")
_MARKER = re.compile(r"<!--\s*doctest:\s*(?P<body>.*?)\s*-->")
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_KINDS = {"preset": "presets", "presets": "presets", "preset(s)": "presets", "flow": "flows", "flows": "flows",
          "objective": "objectives", "objectives": "objectives", "smoother": "smoothers", "smoothers": "smoothers",
          "solver": "solvers", "solvers": "solvers", "sampler": "solvers", "samplers": "solvers",
          "grid": "grids", "grids": "grids", "network": "networks", "networks": "networks",
          "dataset": "datasets", "datasets": "datasets", "metric": "metrics", "metrics": "metrics"}


@dataclass
class Block:
    page: str  # path relative to the repository root
    line: int  # 1-based line of the opening fence
    lang: str
    text: str
    marker: str | None  # "slow", "skip (reason)" or None


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else str(path)


def blocks(path: Path) -> list[Block]:
    """The fenced blocks of a markdown page (indented fences too, dedented), with their doctest markers."""
    lines = path.read_text().splitlines()
    out, i = [], 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, start = len(m["indent"]), m["fence"], i
        body = []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i][indent:] if lines[i][:indent].strip() == "" else lines[i])
            i += 1
        j = start - 1
        while j >= 0 and not lines[j].strip():
            j -= 1
        marker = _MARKER.search(lines[j]) if j >= 0 else None
        out.append(Block(rel(path), start + 1, m["lang"].lower(), "\n".join(body) + "\n",
                         marker["body"] if marker else None))
        i += 1
    return out


def registry_names(kind: str) -> set[str]:
    """Names of the installed components of ``kind``: those other tests register programmatically in the same
    process (``tinymodel``'s ``tiny-score``) are not the project's and need no docs."""
    from diffflow_core import registry

    return {entry.name for entry in registry(kind).list() if entry.distribution != "(programmatic)"}


def all_names() -> dict[str, set[str]]:
    from diffflow_core.hookspecs import KINDS

    return {kind: registry_names(kind) for kind in KINDS}


# -- markers --------------------------------------------------------------------------------------------------

def test_markers_are_known_attached_and_give_reasons():
    seen = 0
    for page in PAGES:
        text = page.read_text()
        attached = {b.line for b in blocks(page) if b.marker}
        for number, line in enumerate(text.splitlines(), 1):
            m = _MARKER.search(line)
            if not m:
                continue
            seen += 1
            body = m["body"]
            assert body == "slow" or re.fullmatch(r"skip \(.{8,}\)", body), \
                f"{rel(page)}:{number}: unknown doctest marker {body!r} (slow, or skip (a reason))"
            following = [b.line for b in blocks(page) if b.line > number]
            assert following and following[0] in attached, f"{rel(page)}:{number}: marker not followed by a fence"
    assert seen < 10, "doctest markers are for the exception: run the snippets instead"


# -- python ---------------------------------------------------------------------------------------------------

def python_pages() -> list:
    params = []
    for page in PAGES:
        py = [b for b in blocks(page) if b.lang in ("python", "py")]
        if not py:
            continue
        name = rel(page)
        slow = any(b.marker == "slow" for b in py)
        params.append(pytest.param(name, None, id=name, marks=[pytest.mark.slow] if slow else []))
        if slow:
            assert name in FAST, f"{name}: a page with slow python needs a cheap twin in FAST"
            params.append(pytest.param(name, FAST[name], id=f"{name}[fast-twin]"))
    return params


def run_python(page: str, substitutions, request, monkeypatch, tmp_path) -> None:
    namespace: dict = {"__name__": "__doc_snippet__"}
    monkeypatch.chdir(tmp_path)
    snippets = [b for b in blocks(ROOT / page)
                if b.lang in ("python", "py") and not (b.marker or "").startswith("skip")]
    if substitutions:
        joined = "".join(b.text for b in snippets)
        for old, _ in substitutions:
            assert old in joined, f"{page}: FAST twin's {old!r} is no longer in the page: update FAST"
    for block in snippets:
        text = block.text
        for old, new in substitutions or ():
            text = text.replace(old, new)
        code = compile("\n" * block.line + text, str(ROOT / page), "exec")
        exec(code, namespace)  # noqa: S102 - the documentation's own snippets
    fixtures = {"tmp_path": tmp_path, "monkeypatch": monkeypatch}
    called = []
    for name, fn in list(namespace.items()):
        if name.startswith("test_") and inspect.isfunction(fn):
            kwargs = {}
            for arg in inspect.signature(fn).parameters:
                kwargs[arg] = fixtures[arg] if arg in fixtures else request.getfixturevalue(arg)
            fn(**kwargs)
            called.append(name)
    if page in CLAIMS:
        assert eval(CLAIMS[page], namespace), f"{page}: the snippets' documented results: {CLAIMS[page]}"  # noqa: S307
    defined = re.findall(r"^def (test_\w+)", "".join(b.text for b in snippets), re.M)
    assert sorted(called) == sorted(defined), f"{page}: documented tests {defined}, called {called}"


@pytest.mark.parametrize("page, substitutions", python_pages())
def test_python_snippets_run(page, substitutions, request, monkeypatch, tmp_path):
    run_python(page, substitutions, request, monkeypatch, tmp_path)


# -- toml -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("block", [pytest.param(b, id=f"{b.page}:{b.line}") for page in PAGES
                                   for b in blocks(page) if b.lang == "toml"])
def test_toml_snippets_parse_and_build(block, tmp_path):
    from diffflow_core import build

    raw = tomllib.loads(block.text)
    if "project" in raw or "build-system" in raw:  # a pyproject.toml
        assert raw["project"]["name"]
        return
    path = tmp_path / "doc.toml"
    path.write_text(block.text)
    model = build(path)
    assert model.config.train.steps > 0


# -- commands -------------------------------------------------------------------------------------------------

@dataclass
class Command:
    where: str
    argv: list[str]
    env: dict[str, str]
    output: list[str]  # the lines a console block shows after it
    inline: bool = False  # an inline code span of the text


def diffflow_argv(tokens: list[str]) -> tuple[dict[str, str], list[str]] | None:
    """(environment, argv) when ``tokens`` call diffflow, else None."""
    env = {}
    while tokens and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", tokens[0]):
        key, value = tokens.pop(0).split("=", 1)
        env[key] = value
    if not tokens:
        return None
    if Path(tokens[0]).name == "diffflow":
        return env, tokens[1:]
    for i in range(len(tokens) - 1):
        if tokens[i] == "-m" and tokens[i + 1] == "diffflow_core.cli":
            return env, tokens[i + 2:]
    return None


def block_commands(block: Block) -> list[Command]:
    console = block.lang == "console"
    lines, out, heredoc = block.text.splitlines(), [], None
    i = 0
    while i < len(lines):
        line, number = lines[i], i
        i += 1
        if heredoc is not None:
            heredoc = None if line.strip() == heredoc else heredoc
            continue
        if console:
            if not line.startswith("$ "):
                if out:
                    out[-1].output.append(line)
                continue
            line = line[2:]
        while line.rstrip().endswith("\\") and i < len(lines):
            line = line.rstrip()[:-1] + " " + lines[i]
            i += 1
        m = re.search(r"<<-?\s*'?(\w+)'?", line)
        if m:
            heredoc = m[1]
        try:
            tokens = shlex.split(line, comments=True)
        except ValueError:
            continue
        called = diffflow_argv(tokens)
        if called:
            out.append(Command(f"{block.page}:{block.line + 1 + number}", called[1], called[0], []))
    return out


_PLACEHOLDER = re.compile(r"(^|[\s/=])[A-Z][A-Z0-9_]*(\b|$)")


def inline_commands(page: Path) -> list[Command]:
    out, number = [], 1
    for paragraph in re.split(r"(\n\s*\n)", page.read_text()):
        start, number = number, number + paragraph.count("\n")
        if paragraph.lstrip().startswith(("```", "~~~", "    ")):
            continue
        for span in re.findall(r"`(diffflow [^`]+)`", paragraph.replace("\n", " ")):
            if any(c in span for c in "[]<>{}|") or "..." in span or _PLACEHOLDER.search(span):
                continue  # a usage pattern, not a command
            out.append(Command(f"{rel(page)}:{start}", shlex.split(span)[1:], {}, [], inline=True))
    return out


def documented_commands() -> list[Command]:
    commands = []
    for page in PAGES:
        for block in blocks(page):
            if block.lang in ("bash", "sh", "shell", "console", ""):
                commands += block_commands(block)
        commands += inline_commands(page)
    return commands


def parse(argv: list[str]):
    """argparse's namespace for ``diffflow argv``; a usage error fails with argparse's own message."""
    from diffflow_core.cli import parser

    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            return parser().parse_args(argv)
        except SystemExit as exc:
            if exc.code == 0:  # --help
                return None
            raise AssertionError(err.getvalue().strip().splitlines()[-1]) from None


def bench_names() -> set[str]:
    return {p.stem for p in (ROOT / "benchmarks").glob("*.py") if not p.name.startswith("_")}


def check_names(args) -> None:
    from diffflow_core.config import load_config

    if getattr(args, "preset", None):
        assert args.preset in registry_names("presets"), f"unknown preset {args.preset!r}"
    if getattr(args, "data", None) and not args.data.endswith(".npy"):
        assert args.data in registry_names("datasets"), f"unknown dataset {args.data!r}"
    if args.command == "presets" and args.name:
        assert args.name in registry_names("presets"), f"unknown preset {args.name!r}"
    if args.command == "bench":
        assert set(args.names) <= bench_names(), f"unknown benchmarks {set(args.names) - bench_names()}"
    config = getattr(args, "config", None)
    if config and "/" in config and not config.startswith("runs/"):  # a config shipped in the repository
        assert (ROOT / config).is_file(), f"no file {config}"
        load_config(ROOT / config)


CHEAP = {"presets", "list", "plugins"}


def counts_free(line: str) -> list[str]:
    """A table row's cells, with plain counts (a plugin's number of components moves often) as one token."""
    return ["#" if cell.isdigit() else cell for cell in line.split()]


@pytest.fixture(scope="module")
def commands():
    found = documented_commands()
    assert len(found) >= 20, "the documentation's commands were not found: is the extraction broken?"
    return found


def test_documented_commands_parse_and_name_what_exists(commands):
    from diffflow_core.cli import COMMANDS

    failures = []
    for command in commands:
        if command.inline and len(command.argv) == 1:  # prose naming a subcommand ("`diffflow eval` reports")
            if command.argv[0] not in COMMANDS:
                failures.append(f"{command.where}: no command diffflow {command.argv[0]}")
            continue
        try:
            args = parse(command.argv)
            if args is not None:
                check_names(args)
        except AssertionError as exc:
            failures.append(f"{command.where}: diffflow {shlex.join(command.argv)}: {exc}")
    assert not failures, "documented commands that do not work today:\n" + "\n".join(failures)


def test_cheap_documented_commands_run_and_show_what_the_docs_show(commands, capsys, monkeypatch, fresh_plugins):
    from diffflow_core.cli import main

    ran, failures = 0, []
    for command in commands:
        argv = command.argv
        cheap = "--help" in argv or "-h" in argv or (argv[:1] and argv[0] in CHEAP) or argv[:2] == ["bench", "--list"]
        if not cheap:
            continue
        with monkeypatch.context() as env:
            for key, value in command.env.items():
                env.setenv(key, value)
            fresh_plugins.reset()
            try:
                code = main(argv)
            except SystemExit as exc:  # --help
                code = exc.code
            finally:
                fresh_plugins.reset()
        got = capsys.readouterr().out
        ran += 1
        if code != 0:
            failures.append(f"{command.where}: exit {code}")
            continue
        shown = [counts_free(line) for line in got.splitlines()]
        position = 0
        for expected in command.output:
            if not expected.strip() or expected.strip() == "...":
                continue
            try:
                position = shown.index(counts_free(expected), position) + 1
            except ValueError:
                failures.append(f"{command.where}: diffflow {shlex.join(argv)} does not print {expected.strip()!r}")
                break
    assert ran >= 5
    assert not failures, "\n".join(failures)


# -- names in tables and parameter lists ---------------------------------------------------------------------

def tables(page: Path):
    """(heading, header cells, rows of cells, line) of each markdown table of a page."""
    lines, heading, i = page.read_text().splitlines(), "", 0
    while i < len(lines):
        if lines[i].startswith("#"):
            heading = lines[i]
        if lines[i].startswith("|") and i + 1 < len(lines) and re.match(r"^\|[\s|:-]+\|$", lines[i + 1]):
            header = [c.strip() for c in lines[i].strip("|").split("|")]
            rows, j = [], i + 2
            while j < len(lines) and lines[j].startswith("|"):
                rows.append((j + 1, [c.strip() for c in re.split(r"(?<!\\)\|", lines[j].strip().strip("|"))]))
                j += 1
            yield heading, header, rows, i + 1
            i = j
        else:
            i += 1


def names_in(cell: str) -> list[str]:
    return [t for t in re.findall(r"`([^`]+)`", cell) if _NAME.match(t) or "*" in t]


def registered(kind: str, name: str, names: dict[str, set[str]]) -> bool:
    return any(fnmatch(n, name) for n in names[kind])


def test_component_names_in_tables_are_registered():
    names, failures = all_names(), []
    for page in PAGES:
        for heading, header, rows, _ in tables(page):
            keys = [h.lower().replace("`", "") for h in header]
            for number, cells in rows:
                for col, key in enumerate(keys):
                    if col >= len(cells):
                        continue
                    if key in _KINDS:  # a column of one kind
                        kinds = [_KINDS[key]]
                    elif key in ("name", "component") and "kind" in keys:  # kind + name rows
                        kind = cells[keys.index("kind")].replace("`", "")
                        if kind not in _KINDS:
                            continue
                        kinds = [_KINDS[kind]]
                    elif key == "registers":  # README's plugin table: any kind
                        kinds = list(names)
                    else:
                        continue
                    for name in names_in(cells[col]):
                        if name == "build" and key == "registers":
                            continue  # the kernel's function, listed beside the components
                        if not any(registered(k, name, names) for k in kinds):
                            failures.append(f"{rel(page)}:{number}: {name!r} is not a registered {'/'.join(kinds)}")
    assert not failures, "\n".join(failures)


def test_architecture_table_covers_every_registered_component():
    """docs/architecture.md's table of systems names every registered preset, flow, objective, smoother and
    solver (a new one must be placed in the taxonomy; a "planned" row with a shipped preset fails)."""
    page = ROOT / "docs" / "architecture.md"
    (header, rows) = next((h, r) for _, h, r, _ in tables(page) if "preset(s)" in [c.lower() for c in h])
    keys = [h.lower() for h in header]
    for key, kind in (("preset(s)", "presets"), ("flow", "flows"), ("objective", "objectives"),
                      ("smoother", "smoothers"), ("solver", "solvers")):
        listed = {name for _, cells in rows for name in names_in(cells[keys.index(key)])}
        missing = registry_names(kind) - listed
        assert not missing, f"docs/architecture.md: registered {kind} missing from the table: {sorted(missing)}"


def test_preset_tables_match_the_presets():
    """Rows of a ``preset`` table: the noise range (``sigma in [a, b]``, ``sigma a..b``, ``beta a..b``), ``rho``
    and the ``sample steps`` column agree with the model the preset builds."""
    from diffflow_core import build

    failures, checked = [], 0
    for page in PAGES:
        for _, header, rows, _ in tables(page):
            keys = [h.lower().replace("`", "") for h in header]
            if "preset" not in keys:
                continue
            for number, cells in rows:
                names = names_in(cells[keys.index("preset")])
                if len(names) != 1 or names[0] not in registry_names("presets"):
                    continue
                model = build(preset=names[0])
                schedule = getattr(model.flow, "schedule", None)
                row = " ".join(cells)
                expected = {}
                for var, low, high in re.findall(r"\b(sigma|beta)(?: in \[| )([\d.]+)(?:, |\.\.)([\d.]+)\]?", row):
                    expected.update({f"{var}_min": float(low), f"{var}_max": float(high)})
                expected.update({"rho": float(r) for r in re.findall(r"\brho ([\d.]+)", row)})
                for key, value in expected.items():
                    checked += 1
                    if getattr(schedule, key, None) != value:
                        failures.append(f"{rel(page)}:{number}: {names[0]}'s {key} is {getattr(schedule, key, None)}, "
                                        f"the page says {value}")
                for col, key in enumerate(keys):
                    if "sample steps" in key and col < len(cells):
                        checked += 1
                        documented = int(re.search(r"\d+", cells[col].replace(",", ""))[0])
                        if documented != model.config.sample.steps:
                            failures.append(f"{rel(page)}:{number}: {names[0]} samples with "
                                            f"{model.config.sample.steps} steps, the page says {documented}")
    assert checked >= 8 and not failures, "\n".join(failures)


_PRESETS_IN_PROSE = re.compile(r"(?:\b[Pp]resets?\b\**:?|named recipes \()\s*"
                               r"((?:`[a-z0-9-]+`(?:\s*,\s*|\s+and\s+|\s+or\s+)?)+)")


def test_preset_names_in_prose_are_registered():
    """``preset `x``` / ``presets `a`, `b``` / ``**Preset** `x``` in the text name registered presets."""
    names, failures, checked = registry_names("presets"), [], 0
    for page in PAGES:
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S).replace("\n", " ")
        for m in _PRESETS_IN_PROSE.finditer(text):
            for name in re.findall(r"`([^`]+)`", m[1]):
                checked += 1
                if name not in names:
                    failures.append(f"{rel(page)}: {name!r} is not a registered preset")
    assert checked >= 20 and not failures, "\n".join(failures)


def constructor(name: str, kinds=("flows", "smoothers", "objectives", "solvers")):
    from diffflow_core import registry

    for kind in kinds:
        if name in registry(kind):
            return inspect.signature(registry(kind).get(name)).parameters
    return None


def strip_parentheses(text: str) -> str:
    while True:
        stripped = re.sub(r"\([^()]*\)", "", text)
        if stripped == text:
            return text
        text = stripped


def test_documented_parameters_exist():
    """``**Parameters**: `a`, `b``` paragraphs of the flow pages, ``Parameters of `x``` tables and
    ``name(param=default, ...)`` spans name real constructor parameters (and the spans' defaults are right)."""
    failures, checked = [], 0
    for page in PAGES:
        text = page.read_text()
        heading = ""
        for paragraph in re.split(r"\n\s*\n", text):
            for line in paragraph.splitlines():
                if line.startswith("#"):
                    heading = line
            m = re.search(r"\*\*Parameters\*\*(?:\s*\(`(?P<own>[^`]+)`\))?:(?P<rest>.*?)(?:\*\*|$)",
                          paragraph.replace("\n", " "))
            if m:
                owner = m["own"] or (re.findall(r"`([^`]+)`", heading) or [None])[0]
                params = constructor(owner) if owner else None
                if params is None:
                    failures.append(f"{rel(page)}: **Parameters** of unknown component {owner!r}")
                    continue
                for name in re.findall(r"`([^`]+)`", strip_parentheses(m["rest"])):
                    checked += 1
                    if name not in params:
                        failures.append(f"{rel(page)}: {owner!r} has no parameter {name!r}")
        for heading, header, rows, line in tables(page):
            owner = re.search(r"Parameters of `([^`]+)`", heading)
            if not owner or "parameter" not in [h.lower() for h in header]:
                continue
            params = constructor(owner[1])
            for number, cells in rows:
                for name in re.findall(r"`([^`]+)`", cells[0]):
                    checked += 1
                    if name not in params:
                        failures.append(f"{rel(page)}:{number}: {owner[1]!r} has no parameter {name!r}")
        for name, arguments in re.findall(r"`([a-z][a-z0-9]*-[a-z0-9-]+)\(([^`]*)\)`", text):
            params = constructor(name, ("objectives", "smoothers", "solvers", "flows"))
            if params is None:
                continue
            for key, value in re.findall(r"(\w+)=([^,]+)", arguments):
                checked += 1
                if key not in params:
                    failures.append(f"{rel(page)}: {name!r} has no parameter {key!r}")
                elif params[key].default != ast.literal_eval(value.strip()):
                    failures.append(f"{rel(page)}: {name}'s {key} defaults to {params[key].default!r}, not {value}")
    assert checked >= 30 and not failures, "\n".join(failures)


# -- links, files, Python objects and tests the pages point to -----------------------------------------------

def slug(heading: str) -> str:
    """GitHub's anchor of a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip("# ").strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def test_links_and_anchors_resolve():
    failures = []
    for page in PAGES:
        text = re.sub(r"`[^`\n]*`", "", re.sub(r"```.*?```", "", page.read_text(), flags=re.S))
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"^[a-z]+://", target):
                continue
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            if not file.exists():
                failures.append(f"{rel(page)}: link to missing {target}")
            elif anchor and file.suffix == ".md":
                anchors = {slug(line) for line in file.read_text().splitlines() if line.startswith("#")}
                if anchor not in anchors:
                    failures.append(f"{rel(page)}: no heading #{anchor} in {rel(file)}")
    assert not failures, "\n".join(failures)


_ROOTS = ("diffflow_core/", "plugins/", "contrib/", "benchmarks/", "tests/", "docs/", "scripts/")


def repo_file(path: str) -> bool:
    """A repository path, or a path inside one of the plugins (``diffflow_kl/scores.py``)."""
    candidates = [ROOT / path] + [d / path for d in [*(ROOT / "plugins").iterdir(), *(ROOT / "contrib").iterdir()]]
    return any(c.exists() for c in candidates)


def in_commit(commit: str, path: str) -> bool:
    import subprocess

    return subprocess.run(["git", "-C", str(ROOT), "cat-file", "-e", f"{commit}:{path}"],
                          capture_output=True).returncode == 0


def test_referenced_files_exist():
    """Backticked repository paths exist; a path no longer in the tree must name the commit that holds it."""
    failures, checked = [], 0
    for page in PAGES:
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
        for paragraph in re.split(r"\n\s*\n", text):
            commits = re.findall(r"\b[0-9a-f]{7,40}\b", paragraph)
            for span in re.findall(r"`([^`\s]+)`", paragraph):
                span = span.split("::")[0]
                if any(c in span for c in "<>{}*$") or not re.search(r"\.(py|md|toml|json|png|pt)$|/$", span):
                    continue
                span = span.rstrip("/")
                plugin_relative = re.match(r"^diffflow_\w+/", span)
                if not (span.startswith(_ROOTS) or plugin_relative) or "/tmp/" in span:
                    continue
                checked += 1
                if not (repo_file(span) or any(in_commit(c, span) for c in commits)):
                    failures.append(f"{rel(page)}: no file {span}" + (f" (nor in {commits})" if commits else ""))
    assert checked >= 20 and not failures, "\n".join(failures)


def resolve(dotted: str):
    import importlib

    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(dotted)


def test_python_references_resolve():
    failures, checked = [], 0
    for page in PAGES:
        for number, line in enumerate(page.read_text().splitlines(), 1):
            for dotted in re.findall(r"`(diffflow_\w+(?:\.\w+)+)(?:\([^`]*\))?`", line):
                checked += 1
                try:
                    resolve(dotted)
                except (ImportError, AttributeError) as exc:
                    failures.append(f"{rel(page)}:{number}: {dotted}: {type(exc).__name__}: {exc}")
    assert checked >= 10 and not failures, "\n".join(failures)


def test_cited_tests_exist():
    sources = "\n".join(p.read_text() for d in ("tests", "plugins", "contrib") for p in (ROOT / d).rglob("test_*.py"))
    defined = set(re.findall(r"^\s*def (test_\w+)", sources, re.M))
    failures, checked = [], 0
    for page in PAGES:
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
        for path, name in re.findall(r"`([\w/.-]+::)?(test_\w+)(?:\(\))?`", text):
            # a bare name of one or two words is a parameter or a file (`test_fraction`, CIFAR's `test_batch`)
            if name.startswith("test_docs") or (not path and name.count("_") < 3):
                continue
            checked += 1
            if name not in defined:
                failures.append(f"{rel(page)}: cites a test {name} that does not exist")
    assert checked >= 5 and not failures, "\n".join(failures)


# -- the run folder the README and the user guide describe ----------------------------------------------------

def documented_run_files(page: str) -> set[str]:
    """The file names in the first column of a page's table whose header is ``| file | content |``."""
    for _, header, rows, _ in tables(ROOT / page):
        if [h.lower() for h in header] == ["file", "content"]:
            return {name for _, cells in rows for name in re.findall(r"`([^`]+)`", cells[0])}
    raise AssertionError(f"{page}: no '| file | content |' table")


def test_run_folder_holds_the_documented_files(tmp_path, capsys):
    """A short ``diffflow run`` of the default EDM model writes exactly the files both pages list, no fewer and no
    more (on moons, which has no density, to skip the test-likelihood ODE: the files are the same)."""
    from diffflow_core.cli import main

    out = tmp_path / "run"
    assert main(["run", "--data", "moons", "--steps", "5", "--n", "200", "--nfe", "3", "--out", str(out)]) == 0
    capsys.readouterr()
    written = {p.name for p in out.iterdir()}
    for page in ("README.md", "docs/user-guide.md"):
        documented = documented_run_files(page)
        assert written == documented, f"{page}: documents {sorted(documented)}, the run wrote {sorted(written)}"


# -- the harness itself catches drift -------------------------------------------------------------------------

def test_harness_catches_bad_commands_names_and_markers(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("<!-- doctest: slow -->\n```bash\ndiffflow run --preset nope --data moons\n"
                    "diffflow run --no-such-flag\n.venv/bin/diffflow list \\\n  flows\n```\n\n"
                    "| preset | flow |\n|---|---|\n| `edm` | `no-such-flow` |\n")
    (block,) = blocks(page)
    assert block.marker == "slow" and block.lang == "bash"
    first, second, third = block_commands(block)
    assert third.argv == ["list", "flows"]
    with pytest.raises(AssertionError, match="unknown preset 'nope'"):
        check_names(parse(first.argv))
    with pytest.raises(AssertionError, match="unrecognized arguments: --no-such-flag"):
        parse(second.argv)
    assert parse(["run", "--help"]) is None
    _, header, rows, _ = next(tables(page))
    assert header == ["preset", "flow"] and names_in(rows[0][1][1]) == ["no-such-flow"]
    assert not registered("flows", "no-such-flow", all_names()) and registered("networks", "dcgan-*", all_names())
    assert slug("## 3. The plugin lifecycle") == "3-the-plugin-lifecycle"
