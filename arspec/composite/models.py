"""Pydantic models of a spec made of several parts (`parts:`): a latent-variable model such as
PixelVAE (Gulrajani et al. 2017), an encoder, a prior and an autoregressive decoder, each part
verified for the guarantee its role needs. Model parts are ordinary specs (see arspec.spec.models)."""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, PrivateAttr, field_validator

from arspec.identifiers import Identifier, SpecName
from arspec.spec.models import MAX_EVENT_ELEMENTS, EventSpec, Strict, TrainingSpec, check_size

ROLES = ("encoder", "prior", "decoder", "flow")
VAE_ROLES = ("encoder", "prior", "decoder")
LATENT = "latent"            # the name a part's conditioning `from:` gives the latent variable


class LatentSpec(Strict):
    """The latent variable z: a feature map [C, H, W] (or [C, T]) with a diagonal Gaussian posterior
    q(z | x) whose mean and scale the encoder computes."""

    shape: list[Annotated[int, Field(ge=1, le=MAX_EVENT_ELEMENTS)]] = Field(min_length=2, max_length=3, description=(
        "[channels, *spatial] of z; each spatial size divides the event's, and the decoder reads z upsampled to the event."))
    min_scale: float = Field(1e-4, gt=0, le=1, description="Lower bound of the posterior's standard deviation (kept away from 0 smoothly).")

    @field_validator("shape")
    @classmethod
    def _not_absurd(cls, shape: list[int]) -> list[int]:
        return check_size(shape, "a latent")


class ElboObjective(Strict):
    """Training minimises the negative evidence lower bound, -E_q[log p(x | z)] + beta KL(q(z | x) || p(z)),
    with beta raised linearly from 0 to 1 over `kl_warmup` steps (KL warm-up, Sønderby et al. 2016)."""

    type: Literal["elbo"]
    kl_warmup: int = Field(0, ge=0, le=100_000_000, description="Steps over which the KL weight rises from 0 to 1 (0: always 1).")
    free_nats: float = Field(0.0, ge=0, description=(
        "Free bits (Kingma et al. 2016): the KL of each latent channel counts only above this many nats "
        "per item, so the latent is not switched off early; 0 disables. Reported bounds always use the full KL."))
    iw_samples: int = Field(1, ge=1, le=100_000, description="Importance samples of the NLL `arspec eval` reports by default (--iw K overrides).")


class DistillationObjective(Strict):
    """Probability density distillation (van den Oord et al. 2017): the student, a stack of inverse
    autoregressive flows, minimises KL(student || teacher) estimated from its own samples (its
    entropy in closed form per step, the cross-entropy under the teacher's output distribution with
    `samples` draws per step), plus `power` times the power loss on STFT magnitudes against the real
    audio of the same conditioning, plus optionally the contrastive term."""

    type: Literal["distillation"]
    samples: int = Field(4, ge=1, le=1000, description="Draws per step of the cross-entropy's Monte-Carlo estimate.")
    power: float = Field(1.0, ge=0, description="Weight of the power loss (0: none).")
    stft: int = Field(512, ge=16, le=65536, description="FFT size of the power loss (hop: a quarter of it).")
    contrastive: float = Field(0.0, ge=0, description=(
        "Weight of the contrastive term: minus the KL between the student and the teacher given another "
        "item's conditioning, pushing the student to use its conditioning (0: none)."))


ObjectiveSpec = Annotated[ElboObjective | DistillationObjective, Field(discriminator="type")]


class EncoderPart(Strict):
    """A feed-forward network over the data x (any ops, no ordering): its output node holds the
    posterior's mean (first C channels) and pre-softplus scale (last C) at the latent's resolution."""

    role: Literal["encoder"]
    description: str = ""
    params: dict[Identifier, Any] = Field(default_factory=dict)
    blocks: dict[Identifier, Any] = Field(default_factory=dict)
    graph: dict[Identifier, Any] = Field(min_length=1)
    output: str | None = None


class StandardNormalPrior(Strict):
    """p(z) = N(0, I): the KL term in closed form."""

    role: Literal["prior"]
    type: Literal["standard_normal"]
    description: str = ""


class CompositeSpec(Strict):
    """The top level of a spec of several parts. `parts` maps names to parts, each with a `role`.
    A latent-variable model (objective elbo): one `encoder`, one `prior` (standard normal, or an
    autoregressive model over the latent map written as a spec) and one `decoder` (an autoregressive
    spec over x reading z through a local conditioning input with `from: latent`). A distilled
    student (objective distillation): `flow` parts, applied in the order written, each an
    autoregressive spec over its input noise whose parameters are the flow's shift and scale."""

    name: SpecName
    description: str = Field("", max_length=10_000)
    event: EventSpec
    latent: LatentSpec | None = Field(None, description="The latent variable z of a latent-variable model (objective: elbo).")
    params: dict[Identifier, Any] = Field(default_factory=dict, description="Values every part may reference as $name (a part's own params win).")
    blocks: dict[Identifier, Any] = Field(default_factory=dict, description="Blocks every part may use (a part's own blocks win).")
    parts: dict[Identifier, dict[str, Any]] = Field(min_length=1, description=(
        "Named parts, each with a `role` (encoder, prior, decoder); model parts take every key of a spec."))
    objective: ObjectiveSpec
    training: TrainingSpec = Field(default_factory=TrainingSpec)

    _text: str = PrivateAttr("")
    _filename: str = PrivateAttr("<string>")
    _overrides: list = PrivateAttr(default_factory=list)
    _ir: Any = PrivateAttr(None)

    @property
    def ir(self) -> Any:
        """The lowered parts (an `arspec.composite.ir.CompositeIR`, built by the loader)."""
        return self._ir

    @property
    def filename(self) -> str:
        return self._filename

    @property
    def source_text(self) -> str:
        return self._text

    @property
    def overrides(self) -> list[str]:
        return list(self._overrides)

    # -- what tools that read a spec's data-facing side see (data loading, training, pictures) ----
    @property
    def decoder(self) -> Any:
        """The decoder part's ModelSpec (a student's first flow: what data-facing tools read)."""
        return self._ir.decoder_spec if self._ir.decoder_spec is not None else self._ir.flow_specs[0]

    @property
    def distribution(self) -> Any:
        return self.decoder.distribution

    @property
    def ordering(self) -> Any:
        return self.decoder.ordering

    @property
    def orderings(self) -> list[Any]:
        return self.decoder.orderings

    @property
    def conditioning(self) -> dict[str, Any]:
        """The context the user or the data supply (the decoder's inputs that no part feeds)."""
        return {k: c for k, c in self.decoder.conditioning.items() if getattr(c, "source", None) is None}

    @property
    def connectivity(self) -> Any:
        return self.decoder.connectivity
