"""Pydantic models of the spec format (everything but op parameters, which live with their ops)."""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PrivateAttr, field_validator

from arspec.identifiers import ContextName, Identifier, SpecName
from arspec.ops.base import RepeatSpec

MAX_EVENT_ELEMENTS = 16_777_216          # 2**24: 4096 x 4096, or 17 minutes of 16 kHz audio


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def check_size(shape: list[int], what: str) -> list[int]:
    """`shape` unchanged, or a ValueError when its elements exceed MAX_EVENT_ELEMENTS (checked before
    anything is allocated)."""
    total = 1
    for s in shape:
        total *= s
    if total > MAX_EVENT_ELEMENTS:
        raise ValueError(f"{what} of {total:,} elements is larger than the limit of {MAX_EVENT_ELEMENTS:,}")
    return shape


class EventSpec(Strict):
    """The shape of one data item: [T] (sequence), [C, T], [C, H, W] (image) or [T, C, H, W] (video: frames of C×H×W)."""

    shape: list[Annotated[int, Field(ge=1, le=MAX_EVENT_ELEMENTS)]] = Field(min_length=1, max_length=4)
    rate: int | None = Field(None, ge=1, le=1_000_000, description="Sample rate in Hz for audio events (default 16000).")

    @field_validator("shape")
    @classmethod
    def _not_absurd(cls, shape: list[int]) -> list[int]:
        return check_size(shape, "an event")


class Bernoulli(Strict):
    """Binary elements, one logit each."""

    type: Literal["bernoulli"]


class Categorical(Strict):
    """Discrete elements with `classes` values, a softmax each; `quantization: mu_law` for audio."""

    type: Literal["categorical"]
    classes: int = Field(256, ge=2, le=65536)
    quantization: Literal["none", "mu_law"] = "none"


class DiscretizedLogisticMixture(Strict):
    """PixelCNN++-style likelihood over `classes` ordered levels, a mixture of `mixtures` logistics."""

    type: Literal["discretized_logistic_mixture"]
    classes: int = Field(256, ge=2, le=65536)
    mixtures: int = Field(5, ge=1, le=100)
    coupled: bool = Field(False, description=(
        "PixelCNN++'s pixel likelihood: one mixture per pixel, later channels' means shifted by the "
        "earlier channels' values. The network must then give a whole pixel parameters that read only "
        "earlier pixels (masks with channel_groups: 1)."))


class _RealMixture(Strict):
    mixtures: int = Field(5, ge=1, le=100)
    min_scale: float = Field(1e-3, gt=0, le=10, description=(
        "Lower bound of every component's scale (approached smoothly), so a component cannot collapse "
        "onto one training point and the likelihood stays finite."))


class GaussianMixture(_RealMixture):
    """Real-valued elements (RNADE, Uria et al. 2013): a mixture of `mixtures` Gaussians each."""

    type: Literal["gaussian_mixture"]


class LaplaceMixture(_RealMixture):
    """Real-valued elements: a mixture of `mixtures` Laplace densities each (RNADE-MoL)."""

    type: Literal["laplace_mixture"]


class LogisticMixture(_RealMixture):
    """Real-valued elements: a mixture of `mixtures` logistic densities each. With one component, the
    shift and scale of an inverse autoregressive flow (Parallel WaveNet's student)."""

    type: Literal["logistic_mixture"]


DistributionSpec = Annotated[
    Bernoulli | Categorical | DiscretizedLogisticMixture | GaussianMixture | LaplaceMixture | LogisticMixture,
    Field(discriminator="type"),
]
REAL_VALUED = ("gaussian_mixture", "laplace_mixture", "logistic_mixture")


class RasterOrdering(Strict):
    """Positions in raster (row-major) order; channels within a position in index order (R→G→B)."""

    type: Literal["raster"]


class PermutationOrdering(Strict):
    """An explicit order: `order[k]` is the flat index of the k-th element generated."""

    type: Literal["permutation"]
    order: list[int]


class RandomOrdering(Strict):
    """A random permutation drawn with `seed`."""

    type: Literal["random"]
    seed: int = 0


class MultiscaleOrdering(Strict):
    """Reed et al. 2017: raster order at the base resolution, then per doubling of resolution three
    groups (right of each known pixel, below it, diagonal), each group generated in one step."""

    type: Literal["multiscale"]
    base: int = Field(4, ge=1)


class AgnosticOrdering(Strict):
    """Order-agnostic training (Uria et al. 2014): every ordering at once. The graph reads the data
    only through `observe` gates (x times the mask of observed elements, the graph input `observed`)
    and predicts every unobserved element in one pass; training draws an ordering and a number of
    observed elements per item, evaluation is exact for one ordering or an ensemble of several."""

    type: Literal["agnostic"]
    seed: int = Field(0, description="Seed of the orderings evaluation averages over (arspec eval --orderings K).")


class FramesOrdering(Strict):
    """A video frame by frame, every element of a frame in one step: the frame's pixels are drawn
    in parallel, each given only the earlier frames (a model without a decoder within the frame)."""

    type: Literal["frames"]


OrderingSpec = Annotated[
    RasterOrdering | PermutationOrdering | RandomOrdering | MultiscaleOrdering | AgnosticOrdering | FramesOrdering,
    Field(discriminator="type"),
]


class GlobalConditioning(Strict):
    """A label for the whole item (class, speaker id), embedded and added inside conditioned ops."""

    type: Literal["global"]
    classes: int = Field(ge=1, le=1_000_000)


class LocalConditioning(Strict):
    """A feature map at a lower rate, upsampled by `upsample` to the event's resolution."""

    type: Literal["local"]
    channels: int = Field(ge=1, le=100_000)
    upsample: int = Field(1, ge=1, le=100_000)
    mode: Literal["repeat", "transposed"] = "repeat"
    source: str | None = Field(None, alias="from", description=(
        "In a part of a model of several parts (`parts:`): the tensor this input is fed from, `latent` "
        "(the latent variable z) or `<part>.<node>`. Absent: given by the user or the data."))


ConditioningSpec = Annotated[GlobalConditioning | LocalConditioning, Field(discriminator="type")]


class BlockSpec(Strict):
    """A reusable sub-graph. Its nodes may use `$param` values; `inputs` name its inputs."""

    params: list[Identifier] = Field(default_factory=list)
    inputs: list[Identifier] = Field(default_factory=lambda: ["in"])
    outputs: dict[Identifier, str] | None = Field(None, description="Threaded outputs (name -> node); default: the last node.")
    graph: dict[Identifier, dict[str, Any]] = Field(min_length=1)


class BlockUse(Strict):
    """A node that instantiates a block, possibly repeated."""

    block: str
    inputs: list[str] | None = None
    args: dict[str, Any] = Field(default_factory=dict)
    repeat: RepeatSpec | None = None
    description: str | None = None


class ConnectivitySpec(Strict):
    """Connectivity-agnostic training (MADE): `masks` mask sets (and orderings) cycled during
    training and averaged over at evaluation."""

    masks: int = Field(1, ge=1, le=1000)
    resample_every: int = Field(1, ge=1)


class TrainingSpec(Strict):
    """Defaults for `arspec train`; each field is also a flag (`--batch-size 32`) and a --set key."""

    optimizer: Literal["adam", "adamw"] = Field("adam", description="Adam, or AdamW (decoupled weight decay).")
    lr: float = Field(1e-3, gt=0, le=10, description="Learning rate.")
    weight_decay: float = Field(0.0, ge=0, description="Weight decay.")
    schedule: Literal["constant", "cosine", "exponential"] = Field("constant", description="Learning-rate schedule over the run.")
    lr_decay: float = Field(0.9995, gt=0, le=1, description="Per-step factor of the exponential schedule.")
    batch_size: int = Field(64, ge=1, le=1_000_000, description="Items per step (per process under torchrun).")
    shuffle: bool = Field(True, description="Shuffle the training items every epoch (false: a fixed order, e.g. to compare runs).")
    epochs: int = Field(10, ge=1, le=1_000_000, description="Passes over the training data.")
    steps: int | None = Field(None, ge=1, description="Stop after this many steps in all (a resumed run counts the steps already taken).")
    patience: int | None = Field(None, ge=1, description="Stop early after this many validations without improvement.")
    warmup_steps: int = Field(0, ge=0, description="Raise the learning rate linearly over this many first steps.")
    grad_clip: float | None = Field(1.0, gt=0, description="Clip the gradient norm (null: no clipping).")
    ema: float | None = Field(None, gt=0, lt=1, description="Keep an exponential moving average of the weights with this decay, warmed up (step n uses min(decay, (1 + n) / (10 + n))); the average is validated, saved and sampled.")
    seed: int = Field(0, description="Seed of the initial weights and the data order.")
    amp: bool = Field(True, description="bf16 autocast on CUDA.")
    compile: bool = Field(False, description="torch.compile the training step (faster steps after a compilation of about a minute).")
    checkpoint: bool = Field(False, description="Recompute each repeated block's activations in the backward pass instead of keeping them (activation checkpointing: less memory, about a third more time; the same gradients).")
    data: str | None = Field(None, description="Default dataset name or path for this spec.")
    validate_every: int = Field(1, ge=1, description="Epochs between validations.")
    log: Literal["none", "tensorboard"] = Field("none", description="Also log to OUT/tensorboard: training and validation NLL, the learning rate, and sample grids of image models (the tensorboard extra).")
    log_samples: int = Field(16, ge=0, le=256, description="Samples in each validation's grid in the TensorBoard log (0: none).")


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, dict) else value


class ModelSpec(Strict):
    """The top level of a spec file. Graph nodes are validated against the op registry when the
    graph is expanded (plugins may add ops), and the loader attaches the lowered IR."""

    name: SpecName
    description: str = Field("", max_length=10_000)
    event: EventSpec
    distribution: DistributionSpec
    ordering: Annotated[
        list[OrderingSpec],
        BeforeValidator(_as_list, json_schema_input_type=OrderingSpec | list[OrderingSpec]),
        Field(min_length=1, description="One ordering, or several for order-agnostic training."),
    ] = Field(default_factory=lambda: [RasterOrdering(type="raster")])  # type: ignore[arg-type]
    conditioning: dict[ContextName, ConditioningSpec] = Field(default_factory=dict)
    params: dict[Identifier, Any] = Field(default_factory=dict, description="Values referenced as $name anywhere in the graph.")
    blocks: dict[Identifier, BlockSpec] = Field(default_factory=dict)
    graph: dict[Identifier, Any] = Field(min_length=1, description="Named nodes in order: an op with its inputs and parameters, or a block use.")
    output: str | None = Field(None, description="The node producing the distribution parameters; default: the last node.")
    connectivity: ConnectivitySpec = Field(default_factory=ConnectivitySpec)
    training: TrainingSpec = Field(default_factory=TrainingSpec)

    _text: str = PrivateAttr("")
    _filename: str = PrivateAttr("<string>")
    _ir: Any = PrivateAttr(None)
    _overrides: list = PrivateAttr(default_factory=list)

    @property
    def orderings(self) -> list[Any]:
        return list(self.ordering)

    @property
    def ir(self) -> Any:
        """The lowered IR (an `arspec.ir.IRGraph`, built by the loader: an invalid spec never gets this far)."""
        return self._ir

    @property
    def source_text(self) -> str:
        return self._text

    @property
    def filename(self) -> str:
        return self._filename

    @property
    def overrides(self) -> list[str]:
        return list(self._overrides)
