"""GANs, Discriminator Flows, Score GANs and DiffFlow's GAN-diffusion family as particle models (SPEC §1, §2.3-2.8)."""
