"""The names a spec gives: node, block, parameter, conditioning and part names are plain ASCII
identifiers, checked when the spec is loaded.

They become Python attribute and variable names in generated code and parameter names in
checkpoints, so they are restricted by construction: ASCII letters, digits and `_`, not starting
with a digit (no `a²`, no `ﬁ` that Python would fold into `fi`, no newline). The spec's own `name`
may also hold `-` and `.` (a part of a model of several parts is named `<spec>.<part>`)."""
from __future__ import annotations

import keyword
import re
from typing import Annotated

from pydantic import AfterValidator, StringConstraints

IDENTIFIER_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
SPEC_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.-]*$"
MAX_IDENTIFIER_LENGTH = 64

Identifier = Annotated[str, StringConstraints(pattern=IDENTIFIER_PATTERN, min_length=1, max_length=MAX_IDENTIFIER_LENGTH)]
SpecName = Annotated[str, StringConstraints(pattern=SPEC_NAME_PATTERN, min_length=1, max_length=100)]

#: what each pattern is called in messages
PATTERN_WORDS = {
    IDENTIFIER_PATTERN: "a plain ASCII identifier (letters, digits and _, not starting with a digit)",
    SPEC_NAME_PATTERN: "a plain ASCII name (letters, digits, _, - and ., starting with a letter or _)",
}

#: keyword arguments of the ARModel methods (log_prob(x, ensemble=..., **context), sample(n, ...)):
#: a conditioning input with one of these names could not be passed as `name=value`
RESERVED_CONTEXT_NAMES = frozenset({
    "x", "n", "generator", "cache", "given", "known", "temperature", "ensemble", "orderings", "iw",
    "order", "observed", "samples", "batch_size", "self",
})



def _not_reserved(name: str) -> str:
    if name in RESERVED_CONTEXT_NAMES:
        raise ValueError(f"{name!r} is an argument of the model's methods (log_prob(x, ...), sample(n, ...)); "
                         "name this conditioning otherwise")
    return name


ContextName = Annotated[Identifier, AfterValidator(_not_reserved)]

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def is_python_name(text: str) -> bool:
    """Whether `text` can stand as a name in generated Python: an ASCII identifier, not a keyword."""
    return _IDENTIFIER.fullmatch(text) is not None and not keyword.iskeyword(text)
