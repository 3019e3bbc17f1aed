"""Hypothesis profiles: `ci` (the default, sized so that `make test` stays inside the CI budget) and
`thorough` (`make test-all`, or HYPOTHESIS_PROFILE=thorough): hundreds of examples per property.
Tests size themselves with `examples(n)`: n at the ci profile, scaled up under thorough."""
from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

if os.environ.get("PYTEST_XDIST_WORKER"):
    # one intra-op thread per worker (and for the processes it starts): two workers each spinning two
    # threads on two cores ran the torch-heavy tests 3-4x slower (measured: 195 s against 52 s)
    os.environ.setdefault("OMP_NUM_THREADS", "1")

settings.register_profile("ci", max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
