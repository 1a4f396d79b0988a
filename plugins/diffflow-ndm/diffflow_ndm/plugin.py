"""Hook implementations (cheap to import: targets are lazy strings)."""
from diffflow_core import hookimpl


@hookimpl
def register_flows(register):
    register("ndm", "diffflow_ndm.flow:NDMFlow",
             "Neural Diffusion Models: learned forward transform F_phi(x, t), reverse model x_hat (SPEC §3)")


@hookimpl
def register_objectives(register):
    register("nelbo", "diffflow_ndm.objectives:DiscreteNELBO", "NDM discrete-time NELBO, T steps (SPEC §3.2)")
    register("nelbo-continuous", "diffflow_ndm.objectives:ContinuousNELBO",
             "NDM continuous-time NELBO with JVP time derivatives and importance-sampled t (SPEC §3.3-3.4)")


@hookimpl
def register_solvers(register):
    register("ndm-ddpm", "diffflow_ndm.samplers:AncestralDDPM", "NDM ancestral sampler, DDPM posterior variance")
    register("ndm-ddim", "diffflow_ndm.samplers:AncestralDDIM", "NDM deterministic DDIM-style sampler (eta = 0)")


@hookimpl
def register_presets(register):
    register("ndm", "diffflow_ndm.presets:NDM", "Neural Diffusion Model (learned F), continuous NELBO, Heun ODE")
    register("ddpm", "diffflow_ndm.presets:DDPM", "DDPM as an NDM with F = x, discrete NELBO, ancestral sampling")
    register("ddim", "diffflow_ndm.presets:DDIM", "DDIM: F = x, deterministic eta = 0 sampler")
    register("vdm", "diffflow_ndm.presets:VDM", "VDM: F = x, learned schedule, continuous NELBO")
    register("flow-matching", "diffflow_ndm.presets:FLOW_MATCHING", "Flow matching path as an NDM with F = x, ODE")
