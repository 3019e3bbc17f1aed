"""Pydantic models of the spec format (everything but op parameters, which live with their ops)."""
from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from arspec.ops.base import RepeatSpec

MAX_EVENT_ELEMENTS = 50_000_000


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EventSpec(Strict):
    """The shape of one data item: [T] (sequence), [C, T] or [C, H, W] (image)."""

    shape: list[Annotated[int, Field(ge=1, le=MAX_EVENT_ELEMENTS)]] = Field(min_length=1, max_length=3)
    rate: int | None = Field(None, ge=1, le=1_000_000, description="Sample rate in Hz for audio events (default 16000).")

    @field_validator("shape")
    @classmethod
    def _not_absurd(cls, shape: list[int]) -> list[int]:
        total = 1
        for s in shape:
            total *= s
        if total > MAX_EVENT_ELEMENTS:
            raise ValueError(f"an event of {total:,} elements is larger than the limit of {MAX_EVENT_ELEMENTS:,}")
        return shape


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


class GaussianMixture(Strict):
    """Real-valued elements (RNADE-style), a mixture of `mixtures` Gaussians each."""

    type: Literal["gaussian_mixture"]
    mixtures: int = Field(5, ge=1, le=100)


DistributionSpec = Annotated[
    Union[Bernoulli, Categorical, DiscretizedLogisticMixture, GaussianMixture], Field(discriminator="type")
]


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


OrderingSpec = Annotated[
    Union[RasterOrdering, PermutationOrdering, RandomOrdering, MultiscaleOrdering], Field(discriminator="type")
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


ConditioningSpec = Annotated[Union[GlobalConditioning, LocalConditioning], Field(discriminator="type")]


class BlockSpec(Strict):
    """A reusable sub-graph. Its nodes may use `$param` values; `inputs` name its inputs."""

    params: list[str] = Field(default_factory=list)
    inputs: list[str] = Field(default_factory=lambda: ["in"])
    outputs: dict[str, str] | None = Field(None, description="Threaded outputs (name -> node); default: the last node.")
    graph: dict[str, dict[str, Any]] = Field(min_length=1)


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
    """Defaults for `arspec train` (each overridable by a flag or --set)."""

    optimizer: Literal["adam", "adamw"] = "adam"
    lr: float = Field(1e-3, gt=0, le=10)
    weight_decay: float = Field(0.0, ge=0)
    schedule: Literal["constant", "cosine", "exponential"] = "constant"
    lr_decay: float = Field(0.9995, gt=0, le=1)
    batch_size: int = Field(64, ge=1, le=1_000_000)
    epochs: int = Field(10, ge=0, le=1_000_000)
    steps: int | None = Field(None, ge=1)
    grad_clip: float | None = Field(1.0, gt=0)
    ema: float | None = Field(None, gt=0, lt=1)
    seed: int = 0
    amp: bool = True
    data: str | None = None
    validate_every: int = Field(1, ge=1)


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, dict) else value


class ModelSpecBase(Strict):
    """The top level of a spec file."""

    name: str = Field(min_length=1, max_length=200)
    description: str = ""
    event: EventSpec
    distribution: DistributionSpec
    ordering: Annotated[
        list[OrderingSpec],
        BeforeValidator(_as_list, json_schema_input_type=Union[OrderingSpec, list[OrderingSpec]]),
        Field(min_length=1, description="One ordering, or several for order-agnostic training."),
    ] = Field(default_factory=lambda: [RasterOrdering(type="raster")])
    conditioning: dict[str, ConditioningSpec] = Field(default_factory=dict)
    params: dict[str, Any] = Field(default_factory=dict, description="Values referenced as $name anywhere in the graph.")
    blocks: dict[str, BlockSpec] = Field(default_factory=dict)
    graph: dict[str, Any] = Field(min_length=1)
    output: str | None = Field(None, description="The node producing the distribution parameters; default: the last node.")
    connectivity: ConnectivitySpec = Field(default_factory=ConnectivitySpec)
    training: TrainingSpec = Field(default_factory=TrainingSpec)

    @property
    def orderings(self) -> list[Any]:
        return list(self.ordering)
