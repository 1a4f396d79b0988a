"""Hook implementations of diffflow-example. Importing this module must stay cheap: targets are lazy
``"module:attr"`` strings, imported only when a component is first used."""
from diffflow_core import hookimpl


@hookimpl
def register_flows(register):
    register("ornstein-uhlenbeck", "diffflow_example.flows:OrnsteinUhlenbeck",
             "dx = -theta (x - mu) dt + sigma dW (an ODE when sigma = 0)")


@hookimpl
def register_solvers(register):
    register("midpoint", "diffflow_example.solvers:Midpoint", "Explicit midpoint (RK2), order 2 (ODE)")
