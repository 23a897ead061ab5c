"""Text spaces wide enough for natural language and for anything an LLM may write."""

from __future__ import annotations

import re
import string
from collections.abc import Iterator, Sequence
from typing import Any

from gymnasium import spaces
from gymnasium.vector.utils import read_from_shared_memory

#: Printable ASCII (with tab and newline) plus every non-ASCII code point of the Basic
#: Multilingual Plane except surrogates, which cannot be encoded as UTF-8.
TEXT_CHARSET: str = string.printable + "".join(
    chr(code) for code in range(0xA0, 0x10000) if not 0xD800 <= code <= 0xDFFF
)

#: Any character outside ``TEXT_CHARSET`` (C0/C1 controls, surrogates, beyond the BMP).
_OUTSIDE_TEXT_CHARSET = re.compile("[^\t\n\x0b\x0c\r\x20-\x7e\xa0-\ud7ff\ue000-\uffff]")

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
    return SharedMemoryText(max_length, min_length=0, charset=TEXT_CHARSET, seed=seed)


def to_text_charset(text: str) -> str:
    r"""Replace every character outside ``TEXT_CHARSET`` with U+FFFD, so ``text`` fits the space.

    Real data holds such characters (emoji in product titles, stray control codes); an env puts
    its observations through this so they stay inside its observation space.

    Example:
        >>> to_text_charset("tea \U0001F375 cup\x00")
        'tea \ufffd cup\ufffd'
    """
    if _OUTSIDE_TEXT_CHARSET.search(text) is None:
        return text
    return _OUTSIDE_TEXT_CHARSET.sub("\ufffd", text)


class SharedMemoryText(spaces.Text):
    """A ``Text`` space whose ``AsyncVectorEnv`` shared-memory observations stay current.

    Gymnasium (1.4) reads a ``Text`` shared buffer once, when the vector env is built, into a
    tuple of strings, so ``AsyncVectorEnv(shared_memory=True)`` (what ``gym.make_vec(...,
    vectorization_mode="async")`` builds) keeps returning that first, empty read. For this
    subclass the read is a live view, decoded whenever it is indexed or copied.
    """


class _SharedTextView(Sequence[str]):
    """The strings in an ``AsyncVectorEnv`` shared buffer, decoded on access (like a numpy view).

    Every access reads the whole buffer (``n`` strings) through Gymnasium's own reader, so
    iterate (one read) or take ``tuple(view)`` rather than index it in a loop.
    """

    def __init__(self, space: spaces.Text, shared_memory: Any, n: int) -> None:
        self._space, self._shared_memory, self._n = space, shared_memory, n

    def _decode(self) -> tuple[str, ...]:
        read_text = read_from_shared_memory.dispatch(spaces.Text)
        return read_text(self._space, self._shared_memory, n=self._n)

    def __getitem__(self, index: Any) -> Any:
        return self._decode()[index]

    def __iter__(self) -> Iterator[str]:
        return iter(self._decode())

    def __len__(self) -> int:
        return self._n

    def __eq__(self, other: object) -> bool:
        return self._decode() == (tuple(other) if isinstance(other, Sequence) else other)

    def __hash__(self) -> int:
        return hash(self._decode())

    def __repr__(self) -> str:
        return repr(self._decode())

    def __deepcopy__(self, memo: dict[int, Any]) -> tuple[str, ...]:
        # AsyncVectorEnv(copy=True) deep-copies the observations it returns: hand out plain strings.
        return self._decode()


@read_from_shared_memory.register(SharedMemoryText)
def _read_live_text(space: SharedMemoryText, shared_memory: Any, n: int = 1) -> _SharedTextView:
    return _SharedTextView(space, shared_memory, n)
