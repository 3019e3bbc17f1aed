"""Static analysis: dependency domains, passes and the autoregressive verdict."""
