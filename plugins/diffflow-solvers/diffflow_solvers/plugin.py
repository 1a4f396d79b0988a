"""Hook implementations (cheap to import: targets are lazy strings)."""
from diffflow_core import hookimpl


@hookimpl
def register_solvers(register):
    register("euler", "diffflow_solvers.solvers:Euler", "Explicit Euler, order 1 (ODE)")
    register("heun", "diffflow_solvers.solvers:Heun", "Heun / explicit trapezoid, order 2; EDM rule at a singular end")
    register("lms", "diffflow_solvers.multistep:LinearMultistep",
             "Linear multistep, variable-step Adams-Bashforth of order 2-4, 1 NFE per step (k-diffusion's lms)")
    register("euler-maruyama", "diffflow_solvers.solvers:EulerMaruyama", "Euler-Maruyama, weak order 1 (SDE)")
    register("dopri5", "diffflow_solvers.adaptive:Dopri5",
             "Adaptive Dormand-Prince 5(4), rtol/atol; NFE reported after the solve (ODE)")
    register("bosh3", "diffflow_solvers.adaptive:Bosh3",
             "Adaptive Bogacki-Shampine 3(2), rtol/atol; NFE reported after the solve (ODE)")


@hookimpl
def register_grids(register):
    register("uniform", "diffflow_solvers.grids:uniform", "Uniform grid from start to end")
    register("edm", "diffflow_solvers.grids:edm", "EDM rho-grid of noise levels, decreasing to 0 (SPEC §2.6)")
    register("power", "diffflow_solvers.grids:power", "Times refined towards the end, (1 - i/N)^exponent (NDM's)")
    register("exponential", "diffflow_solvers.grids:exponential", "Noise levels uniform in log sigma")
    register("log-snr", "diffflow_solvers.grids:exponential",
             "Noise levels uniform in log-SNR = -2 log sigma: the exponential grid")
    register("polyexponential", "diffflow_solvers.grids:polyexponential",
             "Noise levels with log sigma polynomial (degree rho) in the step index")
    register("vp", "diffflow_solvers.grids:vp", "Noise levels of the VP-SDE at uniform t (EDM Table 1)")
