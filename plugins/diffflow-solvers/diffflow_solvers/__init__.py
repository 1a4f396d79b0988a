"""First-party solvers and time grids for diffflow."""
