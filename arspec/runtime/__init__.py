"""Runtime helpers shared by backends: torch layers, distributions' math, the ARModel base."""
