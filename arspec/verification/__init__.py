"""`arspec verify`: exact proof that a hand-written PyTorch model is autoregressive (docs/verify.md)."""
from arspec.verification.api import CacheCheck, VerifyError, VerifyReport, verify

__all__ = ["CacheCheck", "VerifyError", "VerifyReport", "verify"]
