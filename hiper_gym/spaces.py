"""Text spaces wide enough for natural language and for anything an LLM may write."""

from __future__ import annotations

import string

from gymnasium import spaces

#: Printable ASCII (with tab and newline) plus every non-ASCII code point of the Basic
#: Multilingual Plane except surrogates, which cannot be encoded as UTF-8.
TEXT_CHARSET: str = string.printable + "".join(
    chr(code) for code in range(0xA0, 0x10000) if not 0xD800 <= code <= 0xDFFF
)

#: Default upper bound on observation and action lengths, in characters.
DEFAULT_MAX_TEXT_LENGTH = 8192


def text_space(
    max_length: int = DEFAULT_MAX_TEXT_LENGTH, *, seed: int | None = None
) -> spaces.Text:
    """A ``Text`` space that accepts sentences, punctuation, non-ASCII text and the empty string.

    Gymnasium's default ``Text`` charset is alphanumeric only, so ``check_env`` rejects any
    sentence; this one holds printable ASCII and the non-ASCII Basic Multilingual Plane.

    Args:
        max_length: The longest string in the space, in characters.
        seed: Optional seed for the space's own sampler.

    Returns:
        The space, with ``min_length=0``.

    Example:
        >>> space = text_space(64)
        >>> space.contains("go to countertop 1"), space.contains("café 咖啡")
        (True, True)
    """
    return spaces.Text(max_length, min_length=0, charset=TEXT_CHARSET, seed=seed)
