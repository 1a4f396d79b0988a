"""Hook implementations (cheap to import: targets are lazy strings)."""
from diffflow_core import hookimpl


@hookimpl
def register_flows(register):
    register("discriminator", "diffflow_discriminator.flow:DiscriminatorFlow",
             "Particles ascend h = -c(f(x, t)) of a learned discriminator (GAN / Discriminator Flow, SPEC §2.4, §2.8)")
    register("diffusion-gan", "diffflow_discriminator.diffusion_gan:DiffusionGanFlow",
             "DiffFlow Diffusion-GAN / TDPM rows: learned score + noise-conditioned discriminator (SPEC §1.4)")
    register("score-gan", "diffflow_discriminator.score_gan:ScoreGanFlow",
             "Score GAN drift: smoothed KL on noised laws from data and generated EDM denoisers (SPEC §2.7)")
    register("distill", "diffflow_discriminator.distill:DistillFlow",
             "One-step generator distilled from any saved teacher flow: regression or teacher-score Int-PM drift")
    register("discriminator-guidance", "diffflow_discriminator.guidance:DiscriminatorGuidanceFlow",
             "Discriminator guidance of a saved noise-path model: v_base + w (-sigma grad d), mapped by noise level")


@hookimpl
def register_objectives(register):
    register("gan", "diffflow_discriminator.objectives:GanObjective",
             "GAN as an Int-PM: discriminator steps (vanilla / non-saturating / wgan / hinge, GP, R1), then a "
             "generator step through the generator smoother (GPM Alg. 1-2)")
    register("discriminator-flow", "diffflow_discriminator.objectives:DiscriminatorFlowObjective",
             "Discriminator Flow: time-conditioned discriminator vs simulated free particles (GPM Alg. 3)")
    register("generated-dsm", "diffflow_discriminator.score_gan:GeneratedDSM",
             "Score GAN: DSM of the generated-data denoiser between generator steps (SPEC §2.7)")
    register("distill", "diffflow_discriminator.distill:Distill",
             "Distillation through the generator smoother: teacher-solve regression or Score GAN with the teacher")
    register("discriminator-guidance", "diffflow_discriminator.guidance:DiscriminatorGuidance",
             "Noise-conditioned discriminator of data vs a saved base model's samples (Kim et al. 2023)")


@hookimpl
def register_presets(register):
    register("gan", "diffflow_discriminator.presets:GAN", "GAN (non-saturating) = discriminator flow + generator smoother")
    register("wgan-gp", "diffflow_discriminator.presets:WGAN_GP", "WGAN with gradient penalty, generator smoother")
    register("hinge-gan", "diffflow_discriminator.presets:HINGE_GAN", "Hinge GAN, generator smoother")
    register("discriminator-flow", "diffflow_discriminator.presets:DISCRIMINATOR_FLOW",
             "Discriminator Flow: time-conditioned discriminator, free particles, Euler (GPM Alg. 3)")
    register("diffflow-gan", "diffflow_discriminator.presets:DIFFFLOW_GAN",
             "DiffFlow GAN row (D grad d) with a learned noise-conditioned discriminator (SPEC §1.6)")
    register("diffflow-nsgan", "diffflow_discriminator.presets:DIFFFLOW_NSGAN",
             "DiffFlow NS-GAN row ((1 - D) grad d) with a learned noise-conditioned discriminator (SPEC §1.6)")
    register("diffusion-gan", "diffflow_discriminator.presets:DIFFUSION_GAN",
             "DiffFlow's Diffusion-GAN: reverse SDE of a learned score + learned GAN correction (SPEC §1.4)")
    register("tdpm", "diffflow_discriminator.presets:TDPM",
             "TDPM: learned GAN phase down to sigma_trunc, then the learned reverse SDE (SPEC §1.4)")
    register("score-gan", "diffflow_discriminator.presets:SCORE_GAN",
             "Score GAN: generator smoother driven by data/generated EDM scores (eqs 19, 25-28)")
