"""GANs, Discriminator Flows, Score GANs and DiffFlow's GAN-diffusion family as particle models (SPEC §1, §2.3-2.8).

Modules: ``losses`` (the (a, b, c) GAN losses of SPEC §2.4 and the one discriminator loss), ``flow`` (the
``discriminator`` flow, eq 16/20), ``objectives`` (``gan``: GPM Algorithms 1-2; ``discriminator-flow``: GPM
Algorithm 3), ``parts`` (what the objectives share: smoother checks, the hand-off between players),
``diffusion_gan`` (DiffFlow's Diffusion-GAN and TDPM rows), ``score_gan`` (the Score GAN, SPEC §2.7: no
discriminator, but GPM's third generator-smoother GAN, so it sits with the other two) and ``presets``.
It builds EDM ``score`` flows, the ``dsm-edm`` objective and the ``edm`` preset of ``diffflow-score`` and samples
with the solvers and grids of ``diffflow-solvers``.
"""
