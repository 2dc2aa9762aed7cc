"""Strings from the outside world, bounded before they are logged or republished.

An instruction, a validator's reason or a refused request's text can be any size (a 1 MB
string went through the planner's log and the latched plan_state before this); every place
that echoes one uses :func:`bounded` so that a log line or a latched payload stays small.
"""
from __future__ import annotations

MAX_ECHO_CHARS = 512
"""Longest outside string echoed into a log line, a reply or a published payload (characters)."""


def bounded(text: object, limit: int = MAX_ECHO_CHARS) -> str:
    """``text`` as str, cut to ``limit`` characters with a count of what was cut.

    >>> bounded("x" * 600, 10)
    'xxxxxxxxxx... [590 more characters cut]'
    """
    text = text if isinstance(text, str) else str(text)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... [{len(text) - limit} more characters cut]"
