"""Hook implementations (cheap to import: targets are lazy strings)."""
from diffflow_core import hookimpl


@hookimpl
def register_flows(register):
    register("velocity", "diffflow_velocity.flow:VelocityFlow",
             "ScoreFlow / rectified-flow neural ODE dx/dt = f(x, t[, c]) on t in [0, 1] (SPEC §4.1)")


@hookimpl
def register_objectives(register):
    register("flow-matching", "diffflow_velocity.objectives:FlowMatching",
             "Rectified-flow regression of f on x2 - x1 along the interpolation (SPEC §4.2, eq 18)")
    register("path-constrained", "diffflow_velocity.objectives:PathConstrained",
             "Path-constrained loss, one-step or multi-step over a short horizon (SPEC §4.2, eq 19)")


@hookimpl
def register_presets(register):
    register("rectified-flow", "diffflow_velocity.presets:RECTIFIED_FLOW",
             "Rectified flow: velocity MLP, flow-matching loss, Euler sampling from N(0, I)")
    register("scoreflow", "diffflow_velocity.presets:SCOREFLOW",
             "ScoreFlow: velocity MLP, path-constrained loss with lambda(t) = 1/t, Heun sampling")
    register("scoreflow-translate", "diffflow_velocity.presets:SCOREFLOW_TRANSLATE",
             "Class-conditional ScoreFlow on digits with label dropout: guidance and shared-latent translation")
