"""Output patterns, einops-style: the axes of a module's output named so that each output value
belongs to one element of the event. `b` is the batch, `k` the parameters of one element (logits,
mixture terms), every other letter an axis of the event, in the event's order; parentheses group
axes flattened into one (`(k c)`: k major, c minor, as einops reads them).

    "b c h w"       one value per element (Bernoulli logits of an image)
    "b k c h w"     K logits per element, a separate axis
    "b (k c) h w"   3-channel logits in one channel axis, the channels minor (PixelCNN++ layouts)
    "b t k"         a sequence, parameters last (transformers)
    "b d"           a flat event (MADE)"""
from __future__ import annotations

import re
from dataclasses import dataclass

BATCH, PARAMS = "b", "k"


class PatternError(ValueError):
    """A pattern that cannot name this output."""


@dataclass(frozen=True)
class OutputPattern:
    """A parsed pattern: its groups of axis names, in the output's order."""

    text: str
    groups: tuple[tuple[str, ...], ...]

    @property
    def event_axes(self) -> tuple[str, ...]:
        """The event's axis names, in the order the pattern writes them."""
        return tuple(a for g in self.groups for a in g if a not in (BATCH, PARAMS))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(a for g in self.groups for a in g)

    def sizes(self, output_shape: tuple[int, ...], event: dict[str, int]) -> dict[str, int]:
        """The size of every axis, given the output's shape and the event's sizes (k inferred)."""
        if len(output_shape) != len(self.groups):
            raise PatternError(f"the output has {len(output_shape)} axes {list(output_shape)}, the pattern {self.text!r} names {len(self.groups)}")
        sizes: dict[str, int] = {}
        for group, size in zip(self.groups, output_shape):
            known = 1
            unknown = []
            for axis in group:
                if axis in event:
                    known *= event[axis]
                elif axis == PARAMS:
                    unknown.append(axis)
                elif axis == BATCH:
                    unknown.append(axis)
                else:
                    raise PatternError(f"axis {axis!r} of {self.text!r} is not an event axis")
            if len(unknown) > 1:
                raise PatternError(f"the group ({' '.join(group)}) of {self.text!r} has two axes of unknown size")
            if size % known:
                raise PatternError(f"the output's axis of size {size} does not split as ({' '.join(group)}) with the event's sizes")
            if unknown:
                sizes[unknown[0]] = size // known
            elif size != known:
                raise PatternError(f"the output's axis of size {size} is ({' '.join(group)}) = {known} in the event")
            for axis in group:
                if axis in event:
                    sizes[axis] = event[axis]
        sizes.setdefault(PARAMS, 1)
        return sizes


def parse_pattern(text: str) -> OutputPattern:
    """Parse `text`; a PatternError says what is wrong."""
    tokens = re.findall(r"\(|\)|[A-Za-z_][A-Za-z0-9_]*|\S", text)
    groups: list[tuple[str, ...]] = []
    current: list[str] | None = None
    for token in tokens:
        if token == "(":
            if current is not None:
                raise PatternError(f"nested parentheses in {text!r}")
            current = []
        elif token == ")":
            if not current:
                raise PatternError(f"an empty or unopened group in {text!r}")
            groups.append(tuple(current))
            current = None
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", token):
            if current is None:
                groups.append((token,))
            else:
                current.append(token)
        else:
            raise PatternError(f"unexpected {token!r} in {text!r}")
    if current is not None:
        raise PatternError(f"an unclosed group in {text!r}")
    names = [a for g in groups for a in g]
    repeated = sorted({a for a in names if names.count(a) > 1})
    if repeated:
        raise PatternError(f"axis {repeated[0]!r} appears twice in {text!r}")
    if BATCH not in names:
        raise PatternError(f"the pattern {text!r} has no batch axis b")
    if any(BATCH in g and len(g) > 1 for g in groups):
        raise PatternError(f"the batch axis b of {text!r} must stand alone")
    return OutputPattern(text, tuple(groups))


def to_elements(value, pattern: OutputPattern, event: dict[str, int], event_axes: tuple[str, ...], reduce):
    """A tensor shaped like the output, rearranged to (B, *event in `event_axes` order, K) and
    reduced over K with `reduce(tensor, dim)`: one value per item and element."""
    sizes = pattern.sizes(tuple(value.shape), event)
    split = [sizes[a] for g in pattern.groups for a in g]
    flat = value.reshape(split)
    order = [pattern.names.index(BATCH)] + [pattern.names.index(a) for a in event_axes]
    if PARAMS in pattern.names:
        order.append(pattern.names.index(PARAMS))
        return reduce(flat.permute(order), -1)
    return flat.permute(order)
