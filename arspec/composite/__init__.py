"""Models of several parts (`parts:` in a spec): a latent-variable model's encoder, prior and
autoregressive decoder, each lowered like an ordinary spec and verified for its role's guarantee."""
from arspec.composite.models import CompositeSpec

__all__ = ["CompositeSpec"]
