"""Env-agnostic Gymnasium wrappers: Plan-Execute parsing, prompts, options (semi-MDP), SB3 bridge.

Nothing here imports :mod:`hiper_gym.agents`; the learners import from here.
"""

from hiper_gym.wrappers.parsing import (
    FLAVORS,
    Block,
    ParsedResponse,
    parse_response,
    segment_starts,
)

__all__ = [
    "FLAVORS",
    "Block",
    "ParsedResponse",
    "parse_response",
    "segment_starts",
]
