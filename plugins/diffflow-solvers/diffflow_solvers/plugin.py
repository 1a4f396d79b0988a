"""Hook implementations (cheap to import: targets are lazy strings)."""
from diffflow_core import hookimpl


@hookimpl
def register_solvers(register):
    register("euler", "diffflow_solvers.solvers:Euler", "Explicit Euler, order 1 (ODE)")
    register("heun", "diffflow_solvers.solvers:Heun", "Heun / explicit trapezoid, order 2; EDM rule at a singular end")
    register("euler-maruyama", "diffflow_solvers.solvers:EulerMaruyama", "Euler-Maruyama, weak order 1 (SDE)")


@hookimpl
def register_grids(register):
    register("uniform", "diffflow_solvers.grids:uniform", "Uniform grid from start to end")
    register("edm", "diffflow_solvers.grids:edm", "EDM rho-grid of noise levels, decreasing to 0 (SPEC §2.6)")
