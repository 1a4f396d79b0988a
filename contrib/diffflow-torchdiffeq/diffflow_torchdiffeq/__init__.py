"""torchdiffeq's adaptive ODE solvers as a diffflow solver (a second adaptive option beside ``dopri5``)."""
