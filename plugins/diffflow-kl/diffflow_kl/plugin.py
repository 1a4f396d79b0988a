"""Hook implementations (cheap to import: targets are lazy strings)."""
from diffflow_core import hookimpl


@hookimpl
def register_flows(register):
    register("kl", "diffflow_kl.sde:kl", "Forward-KL Wasserstein flow s_q - s_rho over analytic/KDE scores (SPEC §2.1)")
    register("langevin", "diffflow_kl.sde:langevin", "Langevin dynamics s_q dt + sqrt(2) dW (SPEC §2.2 eq 4)")
    register("annealed-langevin", "diffflow_kl.sde:annealed_langevin",
             "Annealed Langevin / NCSN over a sigma ladder (SPEC §2.2 eq 4)")
    register("entropy", "diffflow_kl.sde:entropy", "Negative-entropy flow -s_rho from a particle KDE (SPEC §2.1)")
    register("fdiv", "diffflow_kl.sde:fdiv", "f-divergence flows (kl, reverse-kl, chi2, js) via the KDE ratio (SPEC §2.1)")
    register("diffflow", "diffflow_kl.sde:DiffFlow",
             "DiffFlow SDE f + beta s_q - (gamma - lambda^2/2) s_rho over any scores or a discriminator (SPEC §1.2)")


@hookimpl
def register_smoothers(register):
    register("stein", "diffflow_kl.stein:SteinSmoother", "Stein kernel smoothing of a drift; SVGD with the kl flow (SPEC eq 18)")


@hookimpl
def register_presets(register):
    from diffflow_kl.presets import PRESETS

    for name, (summary, config) in PRESETS.items():
        register(name, config, summary)
