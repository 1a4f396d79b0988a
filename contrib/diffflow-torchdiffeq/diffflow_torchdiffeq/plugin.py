"""Hook implementations (cheap to import: the target is a lazy string, torchdiffeq is imported on first use)."""
from diffflow_core import hookimpl


@hookimpl
def register_solvers(register):
    register("torchdiffeq", "diffflow_torchdiffeq.solver:TorchDiffEq",
             "torchdiffeq's adaptive odeint (method dopri5/dopri8/bosh3/fehlberg2/adaptive_heun, rtol, atol) (ODE)")
