"""Hook implementations (cheap to import: targets are lazy strings, presets plain dicts)."""
from diffflow_core import hookimpl


@hookimpl
def register_flows(register):
    register("mmd", "diffflow_mmd.flow:MMDFlow",
             "MMD gradient flow to fixed data samples, chunked (gaussian/imq/laplace/energy kernels; SPEC §2.1)")


@hookimpl
def register_presets(register):
    from diffflow_mmd.presets import PRESETS

    for name, (summary, config) in PRESETS.items():
        register(name, config, summary)
