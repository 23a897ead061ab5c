"""Env-agnostic Gymnasium wrappers: Plan-Execute parsing, prompts, options (semi-MDP), SB3 bridge.

Nothing here imports :mod:`hiper_gym.agents`; the learners import from here.
"""

from .discrete_commands import DiscreteCommands
from .encode_text import EncodeText
from .groups import group_seeds, make_group_vec
from .options import STOP_REASONS, FollowPlan, Options, plan_to_subgoals
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
from .prompt_observation import PromptObservation
from .prompts import (
    TEMPLATE_FIELDS,
    PromptBuilder,
    PromptTemplate,
    default_template,
    format_admissible_actions,
)
from .text_encoders import HashingBagOfWords, TextEncoder

__all__ = [
    "FLAVORS",
    "STOP_REASONS",
    "STYLES",
    "TEMPLATE_FIELDS",
    "Block",
    "DiscreteCommands",
    "EncodeText",
    "FollowPlan",
    "HashingBagOfWords",
    "Options",
    "ParsedResponse",
    "PlanExecute",
    "PromptBuilder",
    "PromptObservation",
    "PromptTemplate",
    "TextEncoder",
    "default_template",
    "env_flavor",
    "format_admissible_actions",
    "group_seeds",
    "make_group_vec",
    "parse_response",
    "plan_to_subgoals",
    "segment_starts",
]
