"""Env-agnostic Gymnasium wrappers: Plan-Execute parsing, prompts, options (semi-MDP), SB3 bridge.

Nothing here imports :mod:`hiper_gym.agents`; the learners import from here.
"""

from .parsing import (
    FLAVORS,
    STYLES,
    Block,
    ParsedResponse,
    env_flavor,
    parse_response,
    segment_starts,
)
from .plan_execute import PlanExecute

__all__ = [
    "FLAVORS",
    "STYLES",
    "Block",
    "ParsedResponse",
    "PlanExecute",
    "env_flavor",
    "parse_response",
    "segment_starts",
]
