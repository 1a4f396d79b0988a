"""Hook implementations (cheap to import: targets are lazy strings)."""
from diffflow_core import hookimpl


@hookimpl
def register_flows(register):
    register("score", "diffflow_score.flow:ScoreFlow",
             "Score-based diffusion: EDM / VP / VE denoiser, PF-ODE or reverse SDE (SPEC §2.2, §2.6)")


@hookimpl
def register_objectives(register):
    register("dsm-edm", "diffflow_score.objectives:EDMLoss",
             "EDM denoising loss, sigma ~ LogNormal(-1.2, 1.2), weight (s^2+sd^2)/(s sd)^2 (SPEC §2.6)")
    register("dsm-vp", "diffflow_score.objectives:VPLoss", "VP/DDPM epsilon-prediction MSE, t ~ U[eps, 1]")
    register("dsm-ve", "diffflow_score.objectives:VELoss", "VE/NCSN sigma^2-weighted DSM, log-uniform sigma")


@hookimpl
def register_solvers(register):
    register("edm-churn", "diffflow_score.samplers:EDMChurn",
             "EDM's stochastic Heun sampler with churn (S_churn, S_tmin, S_tmax, S_noise) (SPEC §2.6)")
    register("annealed-langevin", "diffflow_score.samplers:AnnealedLangevin",
             "NCSN annealed Langevin dynamics over the flow's sigma ladder (SPEC §2.2 eq 4)")


@hookimpl
def register_presets(register):
    register("edm", "diffflow_score.presets:EDM", "EDM: preconditioned denoiser, dsm-edm, Heun on the rho-grid")
    register("vp", "diffflow_score.presets:VP", "VP-SDE (continuous DDPM): epsilon net, dsm-vp, Heun on the PF-ODE")
    register("ve", "diffflow_score.presets:VE", "VE-SDE (SMLD): geometric sigma(t), dsm-ve, Heun on the PF-ODE")
    register("ncsn", "diffflow_score.presets:NCSN", "NCSN: VE score net, annealed Langevin over a sigma ladder")
