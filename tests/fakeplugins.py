"""Fake installed plugin distributions for the plugin-system tests.

Each fake plugin is a hand-written ``*.dist-info`` (METADATA + entry_points.txt) plus a module, in a temporary
directory put on ``sys.path``; ``importlib.metadata`` reads ``sys.path`` when called, so the plugin manager finds
them exactly as it finds pip-installed ones, and a subprocess finds them through ``PYTHONPATH``. Import the
fixture into a test module with ``from fakeplugins import fake_dist``.
"""
from __future__ import annotations

import itertools
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import NamedTuple

import pytest

_COUNTER = itertools.count()


class FakeDist(NamedTuple):
    module: str  # the plugin's hook module
    root: Path  # the sys.path entry holding it and its dist-info


@pytest.fixture
def fake_dist(tmp_path, monkeypatch):
    """``install(entry_name, source, dist=..., impl=...)`` writes a fake distribution, first on ``sys.path``.

    ``source`` (and ``impl``, written as module ``<module>_impl``) may use ``{module}`` for the module's name.
    """

    def install(entry_name: str, source: str, *, dist: str | None = None, version: str = "1.2.3",
                impl: str | None = None) -> FakeDist:
        module = f"fake_diffflow_plugin_{next(_COUNTER)}"
        dist = dist or f"diffflow-fake-{entry_name}"
        root = tmp_path / module
        info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        (info / "entry_points.txt").write_text(f"[diffflow]\n{entry_name} = {module}\n")
        (root / f"{module}.py").write_text(textwrap.dedent(source.format(module=module)))
        if impl is not None:
            (root / f"{module}_impl.py").write_text(textwrap.dedent(impl))
        monkeypatch.syspath_prepend(str(root))
        return FakeDist(module, root)

    return install


def only(monkeypatch, *names: str) -> None:
    """Load only these plugins (and the built-ins), with the other plugin variables unset."""
    monkeypatch.setenv("DIFFFLOW_LOAD_PLUGINS", ",".join(names))
    monkeypatch.delenv("DIFFFLOW_DISABLE_PLUGINS", raising=False)
    monkeypatch.delenv("DIFFFLOW_STRICT_PLUGINS", raising=False)


def diffflow(args: list[str], *dists: FakeDist, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    """Run the ``diffflow`` command in a fresh interpreter that sees ``dists`` and only the ``DIFFFLOW_*``
    variables given in ``env``."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DIFFFLOW_")}
    clean["PYTHONPATH"] = os.pathsep.join([*(str(d.root) for d in dists), os.environ.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "diffflow_core.cli", *args], capture_output=True, text=True,
                          cwd=cwd, env={**clean, **env}, timeout=120)
