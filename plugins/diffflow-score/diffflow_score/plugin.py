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
    register("ddim", "diffflow_score.dpm:DDIM",
             "Deterministic DDIM = DPM-Solver-1 on the PF-ODE; Euler in EDM's sigma (needs denoise + schedule)")
    register("dpm-2", "diffflow_score.dpm:DPMSolver2", "DPM-Solver-2 (midpoint in log sigma), order 2, k-diffusion's dpm_2")
    register("dpmpp-2m", "diffflow_score.dpm:DPMSolverPP2M", "DPM-Solver++(2M), multistep order 2, 1 NFE per step")
    register("unipc", "diffflow_score.dpm:UniPC", "UniPC bh2 predictor-corrector, order (predictor order + 1), 1 NFE per step")
    register("euler-ancestral", "diffflow_score.ancestral:EulerAncestral",
             "Euler ancestral (k-diffusion's euler_ancestral): step to sigma_down, noise sigma_up; eta, 1 NFE/step")
    register("heun-ancestral", "diffflow_score.ancestral:HeunAncestral",
             "Heun ancestral: Heun step to sigma_down, noise sigma_up; eta, 2 NFE per step")
    register("dpmpp-2m-sde", "diffflow_score.ancestral:DPMSolverPP2MSDE",
             "DPM-Solver++(2M) SDE (k-diffusion's dpmpp_2m_sde, midpoint), eta, 1 NFE per step")
    register("dpmpp-3m-sde", "diffflow_score.ancestral:DPMSolverPP3MSDE",
             "DPM-Solver++(3M) SDE (k-diffusion's dpmpp_3m_sde), eta, 1 NFE per step")
    register("annealed-langevin", "diffflow_score.samplers:AnnealedLangevin",
             "NCSN annealed Langevin dynamics over the flow's sigma ladder (SPEC §2.2 eq 4)")


@hookimpl
def register_presets(register):
    register("edm", "diffflow_score.presets:EDM", "EDM: preconditioned denoiser, dsm-edm, Heun on the rho-grid")
    register("vp", "diffflow_score.presets:VP", "VP-SDE (continuous DDPM): epsilon net, dsm-vp, Heun on the PF-ODE")
    register("ve", "diffflow_score.presets:VE", "VE-SDE (SMLD): geometric sigma(t), dsm-ve, Heun on the PF-ODE")
    register("ncsn", "diffflow_score.presets:NCSN", "NCSN: VE score net, annealed Langevin over a sigma ladder")
