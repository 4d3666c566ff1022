"""``requires(capability)``: the contract suite's one mark (needs pytest).

A test that holds only on backends offering more than the contract carries
``@requires(CAP_DURABLE)``; it runs on a backend whose ``BackendSpec`` declares every
named capability and is skipped elsewhere, the skip naming the backend and what it
lacks. Capabilities come from ``meetq.backend.CAPABILITIES``, so a misspelt name fails
at import instead of skipping forever. The mark is ``meetq_requires``; the pytest
plugin registers it, so ``--strict-markers`` accepts it.
"""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from meetq.core.errors import ValidationError
from meetq.core.protocols import CAPABILITIES

__all__ = ["MARK_NAME", "missing_capabilities", "requires"]

MARK_NAME = "meetq_requires"
MARK_HELP = (
    f"{MARK_NAME}(*capabilities): run only on a backend whose BackendSpec declares every "
    "named capability (meetq.testing.requires); skipped elsewhere, naming what is missing"
)


def requires(*capabilities: str) -> pytest.MarkDecorator:
    """Mark a test (or class) to run only on backends declaring all ``capabilities``."""
    if not capabilities:
        raise ValidationError("capabilities", (), "name at least one capability")
    for capability in capabilities:
        if capability not in CAPABILITIES:
            raise ValidationError(
                "capabilities",
                capability,
                f"not a capability; require some of: {', '.join(sorted(CAPABILITIES))}",
            )
    mark: pytest.MarkDecorator = getattr(pytest.mark, MARK_NAME)
    return mark(*capabilities)


def missing_capabilities(node: pytest.Item, declared: Iterable[str]) -> list[str]:
    """The capabilities ``node``'s marks require that ``declared`` lacks, sorted."""
    have = set(declared)
    wanted = {c for mark in node.iter_markers(MARK_NAME) for c in mark.args}
    return sorted(wanted - have)
