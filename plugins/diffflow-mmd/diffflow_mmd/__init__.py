"""The MMD gradient flow (SPEC §2.1, §2.11.5); its radial kernels and chunked interactions are diffflow-kl's."""
