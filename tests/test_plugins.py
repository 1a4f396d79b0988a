"""The plugin system (DESIGN §4) against fake installed distributions (see ``fakeplugins``).

``DIFFFLOW_LOAD_PLUGINS`` restricts loading to the fakes (and the solvers where needed) so that other installed
plugins cannot influence these tests.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap
import types
import warnings
from importlib import metadata
from pathlib import Path

import pytest

from diffflow_core import ConflictError, Flow, PluginError, UnknownComponentError, hookimpl, hookspecs
from diffflow_core.registry import Registry

sys.path.insert(0, str(Path(__file__).parent))
from fakeplugins import fake_dist, only  # noqa: E402,F401 - fake_dist is a fixture

GOOD = """
from diffflow_core import hookimpl

@hookimpl
def register_flows(register):
    register("fake-flow", "{module}_impl:FakeFlow", "A fake flow")

@hookimpl
def register_solvers(register):
    register("fake-solver", "{module}_impl:FakeSolver")
"""

GOOD_IMPL = '''
from diffflow_core import Flow, Solver

class FakeFlow(Flow):
    """Drift -x (from the fake plugin)."""
    def __init__(self, rate: float = 1.0):
        super().__init__()
        self.rate = rate
    def drift(self, x, t):
        return -self.rate * x

class FakeSolver(Solver):
    """A fake solver."""
'''


def test_importlib_metadata_sees_a_fake_distribution(fake_dist):
    module = fake_dist("good", GOOD, impl=GOOD_IMPL).module
    found = {ep.name: ep for ep in metadata.entry_points(group="diffflow")}
    assert found["good"].value == module
    assert found["good"].dist.name == "diffflow-fake-good" and found["good"].dist.version == "1.2.3"


def test_good_plugin_is_active_with_provenance_and_lazy_targets(fresh_plugins, fake_dist, monkeypatch):
    module = fake_dist("good", GOOD, impl=GOOD_IMPL).module
    only(monkeypatch, "good")
    flows = fresh_plugins.registry("flows")
    info = fresh_plugins.manager().plugins["good"]
    assert (info.status, info.distribution, info.version, info.error) == ("active", "diffflow-fake-good", "1.2.3", None)
    assert info.hooks == ["register_flows", "register_solvers"] and info.components == 2
    entry = flows.entry("fake-flow")
    assert (entry.plugin, entry.distribution, entry.version, entry.summary) == (
        "good", "diffflow-fake-good", "1.2.3", "A fake flow")
    assert f"{module}_impl" not in sys.modules, "a lazy target must not be imported before it is used"
    flow = flows.create("fake-flow", rate=2.0)
    assert isinstance(flow, Flow) and flow.rate == 2.0
    assert f"{module}_impl" in sys.modules
    # a summary left empty comes from the class docstring once loaded, and the registry reports the provider
    assert fresh_plugins.registry("solvers").entry("fake-solver").plugin == "good"


def test_import_error_is_isolated_and_reported(fresh_plugins, fake_dist, monkeypatch):
    fake_dist("broken", "import no_such_module_anywhere\n")
    fake_dist("good", GOOD, impl=GOOD_IMPL)
    only(monkeypatch, "broken", "good")
    with pytest.warns(UserWarning, match="broken.*was not loaded.*ModuleNotFoundError"):
        flows = fresh_plugins.registry("flows")
    assert "fake-flow" in flows  # the good plugin still loads
    info = fresh_plugins.manager().plugins["broken"]
    assert info.status == "failed" and "import failed" in info.error and "no_such_module_anywhere" in info.error


def test_raising_hook_contributes_nothing(fresh_plugins, fake_dist, monkeypatch):
    fake_dist("raiser", """
        from diffflow_core import hookimpl

        @hookimpl
        def register_flows(register):
            register("half-registered", "os:getcwd")

        @hookimpl
        def register_solvers(register):
            raise RuntimeError("boom in hook")
        """)
    only(monkeypatch, "raiser")
    with pytest.warns(UserWarning, match="raiser.*hook register_solvers raised: RuntimeError: boom in hook"):
        flows = fresh_plugins.registry("flows")
    assert "half-registered" not in flows, "a failing plugin's registrations are committed all or nothing"
    assert fresh_plugins.manager().plugins["raiser"].status == "failed"


def test_unknown_hook_name_fails_the_plugin(fresh_plugins, fake_dist, monkeypatch):
    fake_dist("typo", """
        from diffflow_core import hookimpl

        @hookimpl
        def register_flow(register):  # singular: not a diffflow hook
            register("never", "os:getcwd")
        """)
    only(monkeypatch, "typo")
    with pytest.warns(UserWarning, match="typo.*invalid hooks.*register_flow"):
        flows = fresh_plugins.registry("flows")
    assert "never" not in flows
    assert fresh_plugins.manager().plugins["typo"].status == "failed"


def test_disabled_plugin_is_listed_but_not_imported(fresh_plugins, fake_dist, monkeypatch):
    module = fake_dist("good", GOOD, impl=GOOD_IMPL).module
    only(monkeypatch, "good")
    monkeypatch.setenv("DIFFFLOW_DISABLE_PLUGINS", "solvers, good")
    assert "fake-flow" not in fresh_plugins.registry("flows")
    assert fresh_plugins.manager().plugins["good"].status == "disabled"
    assert module not in sys.modules


def test_allow_list_loads_only_named_plugins_and_always_the_builtins(fresh_plugins, fake_dist, monkeypatch):
    fake_dist("good", GOOD, impl=GOOD_IMPL)
    fake_dist("other", GOOD.replace("fake-flow", "other-flow").replace("fake-solver", "other-solver"),
              impl=GOOD_IMPL)
    only(monkeypatch, "other")
    flows = fresh_plugins.registry("flows")
    assert "other-flow" in flows and "fake-flow" not in flows
    assert fresh_plugins.manager().plugins["good"].status == "not allowed"
    assert "identity" in fresh_plugins.registry("smoothers")  # built-ins are not plugins one can drop


def test_two_third_party_plugins_with_one_name_raise_naming_both(fresh_plugins, fake_dist, monkeypatch):
    fake_dist("alpha", GOOD, impl=GOOD_IMPL, dist="diffflow-alpha", version="0.1")
    fake_dist("beta", GOOD, impl=GOOD_IMPL, dist="diffflow-beta", version="0.2")
    only(monkeypatch, "alpha", "beta")
    with pytest.warns(UserWarning, match=r"plugin 'beta': flows 'fake-flow' is registered by several plugins: "
                                         r"'alpha' \(diffflow-alpha 0.1\), 'beta' \(diffflow-beta 0.2\)"):
        flows = fresh_plugins.registry("flows")  # reported at load, not only when used
    assert "registered by several plugins" in fresh_plugins.manager().plugins["beta"].error
    with pytest.raises(ConflictError) as err:
        flows.get("fake-flow")
    message = str(err.value)
    assert "'alpha' (diffflow-alpha 0.1)" in message and "'beta' (diffflow-beta 0.2)" in message
    assert "DIFFFLOW_DISABLE_PLUGINS" in message
    assert [e.plugin for e in flows.list() if e.name == "fake-flow"] == ["alpha", "beta"]
    monkeypatch.setenv("DIFFFLOW_DISABLE_PLUGINS", "beta")  # the advertised fix works
    fresh_plugins.reset()
    assert fresh_plugins.registry("flows").entry("fake-flow").plugin == "alpha"
    monkeypatch.delenv("DIFFFLOW_DISABLE_PLUGINS")
    monkeypatch.setenv("DIFFFLOW_STRICT_PLUGINS", "1")  # strict mode: the clash is fatal at load
    fresh_plugins.reset()
    with pytest.raises(PluginError, match="flows 'fake-flow' is registered by several plugins: 'alpha'.*'beta'"):
        fresh_plugins.registry("solvers")


def test_a_builtin_is_never_shadowed(fresh_plugins, fake_dist, monkeypatch):
    fake_dist("shadow", """
        from diffflow_core import hookimpl

        @hookimpl
        def register_smoothers(register):
            register("identity", "os:getcwd", "an impostor")
            register("fresh-smoother", "os:getcwd")
        """)
    only(monkeypatch, "shadow")
    with pytest.warns(UserWarning, match="smoothers 'identity' is provided by built-in plugin 'core'"):
        smoothers = fresh_plugins.registry("smoothers")
    from diffflow_core.smoothers import IdentitySmoother

    assert smoothers.get("identity") is IdentitySmoother
    assert "fresh-smoother" in smoothers  # its other components are kept
    info = fresh_plugins.manager().plugins["shadow"]
    assert "may not shadow it" in info.error and "shadow" in info.error


def test_a_first_party_name_taken_earlier_by_a_third_party_is_reclaimed_loudly(fresh_plugins, fake_dist,
                                                                               monkeypatch):
    """Plugins load sorted by name: 'aaa' registers 'heun' before the first-party 'solvers' does."""
    fake_dist("aaa", """
        from diffflow_core import hookimpl

        @hookimpl
        def register_solvers(register):
            register("heun", "os:getcwd")
        """)
    only(monkeypatch, "aaa", "solvers")
    with pytest.warns(UserWarning, match="plugin 'aaa': solvers 'heun' is provided by .* 'solvers'.*dropped"):
        solvers = fresh_plugins.registry("solvers")
    assert solvers.entry("heun").distribution == "diffflow-solvers"
    info = fresh_plugins.manager().plugins["aaa"]
    assert info.components == 0 and "dropped" in info.error


def test_one_plugin_name_from_two_distributions_loads_the_first_and_refuses_the_other(fresh_plugins, fake_dist,
                                                                                      monkeypatch):
    fake_dist("twin", GOOD, impl=GOOD_IMPL, dist="diffflow-twin-one")
    fake_dist("twin", GOOD, impl=GOOD_IMPL, dist="diffflow-twin-two")  # prepended: first on sys.path
    only(monkeypatch, "twin")
    with pytest.warns(UserWarning, match=r"plugin 'twin' \(diffflow-twin-one 1.2.3\) was refused: the plugin name "
                                         "'twin' is also declared by diffflow-twin-two, which comes first"):
        fresh_plugins.registry("flows")
    assert fresh_plugins.manager().plugins["twin"].distribution == "diffflow-twin-two"
    listed = [(i.name, i.distribution, i.status) for i in fresh_plugins.manager().infos() if i.name == "twin"]
    assert listed == [("twin", "diffflow-twin-two", "active"), ("twin", "diffflow-twin-one", "refused")]


@pytest.mark.parametrize("case", ["import", "exit", "hook", "shadow", "invalid"])
def test_strict_mode_makes_plugin_failures_fatal(fresh_plugins, fake_dist, monkeypatch, case):
    hook = "from diffflow_core import hookimpl\n@hookimpl\ndef register_{}(register):\n    {}\n"
    source = {"import": "raise ImportError('cannot import this')\n",
              "exit": "import sys\nsys.exit(3)\n",
              "hook": hook.format("flows", "raise ValueError('bad hook')"),
              "shadow": hook.format("smoothers", "register('identity', 'os:getcwd')"),
              "invalid": hook.format("flows", "register('answer', 42)")}[case]
    fake_dist("strict", source)
    only(monkeypatch, "strict")
    monkeypatch.setenv("DIFFFLOW_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError, match="plugin 'strict'"), warnings.catch_warnings():
        warnings.simplefilter("error")  # strict mode reports through the error, not twice
        fresh_plugins.registry("flows")
    with pytest.raises(PluginError, match="plugin 'strict'"):  # no partial registry afterwards either
        fresh_plugins.registry("solvers")


def test_strict_mode_reports_every_problem_at_once(fresh_plugins, fake_dist, monkeypatch):
    fake_dist("broken", "import no_such_module_anywhere\n")
    fake_dist("exits", "raise SystemExit(4)\n")
    fake_dist("good", GOOD, impl=GOOD_IMPL)
    only(monkeypatch, "broken", "exits", "good")
    monkeypatch.setenv("DIFFFLOW_STRICT_PLUGINS", "yes")
    with pytest.raises(PluginError) as err:
        fresh_plugins.registry("flows")
    assert "plugin 'broken'" in str(err.value) and "plugin 'exits'" in str(err.value)
    statuses = {i.name: i.status for i in fresh_plugins.manager().infos()}  # the listing survives strict mode
    assert (statuses["broken"], statuses["exits"], statuses["good"]) == ("failed", "failed", "active")


def test_unknown_name_suggests_lists_and_names_failed_plugins(fresh_plugins, fake_dist, monkeypatch):
    fake_dist("broken", "import no_such_module_anywhere\n")
    only(monkeypatch, "broken", "solvers")
    with pytest.warns(UserWarning):
        solvers = fresh_plugins.registry("solvers")
    with pytest.raises(UnknownComponentError) as err:
        solvers.get("eulr")
    message = str(err.value)
    assert "unknown solver 'eulr'; did you mean 'euler'" in message
    assert f"Available solvers: {', '.join(sorted(solvers.names()))}." in message  # every one, sorted
    assert "Plugins that failed to load: broken (import failed: ModuleNotFoundError" in message
    assert isinstance(err.value, KeyError) and not message.startswith('"')


def test_programmatic_registration(fresh_plugins, monkeypatch):
    only(monkeypatch)

    class Local(Flow):
        """A notebook flow."""

        def drift(self, x, t):
            return x

    entry = fresh_plugins.register("flows", "local", Local)
    flows = fresh_plugins.registry("flows")
    assert flows.get("local") is Local and entry.summary == "A notebook flow."
    assert (entry.plugin, entry.distribution) == ("user", "(programmatic)")
    assert fresh_plugins.manager().plugins["user"].components == 1

    class Local2(Local):
        """The same cell, edited and run again."""

    fresh_plugins.register("flows", "local", Local2)  # re-registering from the same plugin replaces
    assert flows.get("local") is Local2 and fresh_plugins.manager().plugins["user"].components == 1
    with pytest.raises(ConflictError, match="may not shadow"):
        fresh_plugins.register("smoothers", "identity", Local)
    with pytest.raises(PluginError, match="unknown component kind 'flow'"):
        fresh_plugins.register("flow", "x", Local)

    hooks = types.SimpleNamespace(register_solvers=hookimpl(lambda register: register("nb-solver", "os:getcwd")))
    info = fresh_plugins.register_plugin(hooks, "notebook")
    assert info.status == "active" and info.hooks == ["register_solvers"]
    assert fresh_plugins.registry("solvers").entry("nb-solver").plugin == "notebook"


def test_every_kind_has_a_hook_a_registry_and_receives_components(fresh_plugins, monkeypatch):
    only(monkeypatch)
    hooks = {}
    for kind in hookspecs.KINDS:
        assert callable(getattr(hookspecs, f"register_{kind}")), f"kind {kind} has no hookspec"
        hooks[f"register_{kind}"] = hookimpl(lambda register, kind=kind: register(f"every-{kind}", "os:getcwd"))
    fresh_plugins.register_plugin(types.SimpleNamespace(**hooks), "every")
    for kind in hookspecs.KINDS:
        reg = fresh_plugins.registry(kind)
        assert isinstance(reg, Registry) and reg.kind == kind
        assert reg.entry(f"every-{kind}").plugin == "every"
    with pytest.raises(PluginError, match="kind: unknown component kind 'solver'; expected one of flows"):
        fresh_plugins.registry("solver")


def test_loading_happens_once(fresh_plugins, monkeypatch):
    calls = []
    real = metadata.entry_points
    monkeypatch.setattr(metadata, "entry_points", lambda **kw: calls.append(kw) or real(**kw))
    for kind in hookspecs.KINDS:
        fresh_plugins.registry(kind).names()
    fresh_plugins.manager().infos()
    assert calls == [{"group": "diffflow"}]


def test_concurrent_first_use_waits_for_the_loader(fresh_plugins, monkeypatch):
    """Threads hitting a registry while another thread loads see the complete registry, not a partial one."""
    import threading
    import time

    only(monkeypatch, "solvers")
    real = metadata.entry_points

    def slow(**kw):
        time.sleep(0.2)
        return real(**kw)

    monkeypatch.setattr(metadata, "entry_points", slow)
    results, errors = [], []

    def use():
        try:
            results.append(fresh_plugins.registry("solvers").get("heun").__name__)
        except Exception as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=use) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and results == ["Heun"] * 4


def test_import_diffflow_core_scans_nothing():
    script = textwrap.dedent("""
        import sys
        from importlib import metadata
        real = metadata.entry_points
        def refuse(*a, **k):
            if k.get("group") == "diffflow" or not k:
                raise AssertionError("diffflow entry points scanned at import")
            return real(*a, **k)
        metadata.entry_points = refuse
        import diffflow_core
        from diffflow_core import Flow, Objective, Smoother, Solver, hookimpl, registry
        from diffflow_core import plugins
        assert plugins._MANAGER is None
        assert not [m for m in sys.modules if m.startswith("diffflow_solvers")]
        print("ok")
        """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
