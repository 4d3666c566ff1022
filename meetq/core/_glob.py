"""The pattern language of the ``PubSubTransport`` contract: Redis ``PSUBSCRIBE`` globs.

Every transport matches ``psubscribe`` patterns as Redis does (``*``, ``?``, ``[...]``,
``\\x``), whatever it runs on: the memory backend and the example plugin implement the
matcher themselves, Redis natively. What the front end needs of the language lives here,
beside the contract and not in a backend: quoting a literal (the namespace prefix) so it
matches only itself.
"""

from __future__ import annotations

__all__ = ["GLOB_SPECIAL", "glob_escape"]

#: Characters special in a pattern.
GLOB_SPECIAL = frozenset("*?[]\\")


def glob_escape(text: str) -> str:
    """``text`` as a pattern that matches exactly itself (a namespace like ``tenant[1]``
    must not match ``tenant1``)."""
    return "".join("\\" + char if char in GLOB_SPECIAL else char for char in text)
