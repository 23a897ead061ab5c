"""Env-agnostic Gymnasium wrappers: Plan-Execute parsing, prompts, options (semi-MDP), SB3 bridge.

Everything works on any text env that lists ``admissible_commands`` in ``info`` (``Options`` on any
Gymnasium env), and nothing here imports :mod:`hiper_gym.agents`; the learners import from here.

* :func:`parse_response`: the one parser of ``<switch>``/``<subgoal>``/``<action>`` responses
  (hiper-method.md §1.3-1.4), with character spans for the loss masks; :func:`segment_starts`.
* :class:`PlanExecute`: the action is the whole response; ``info`` tracks subgoals and segments.
* :class:`PromptBuilder` and :class:`PromptObservation`: the per-turn prompt (§1.2).
* :class:`Options`: one ``step`` runs an option to termination and returns the SMDP transition;
  :class:`FollowPlan` and :func:`plan_to_subgoals` build an oracle from an expert plan.
* :class:`DiscreteCommands` and :class:`EncodeText`: ``Discrete(K_max)`` with ``action_masks()``
  and ``Box`` observations for sb3-contrib's ``MaskablePPO``.
* :class:`EpisodeGuard`: stepping an ended episode raises (the suite's envs are made with it).
* :func:`make_group_vec` and :func:`group_seeds`: groups of copies that share a game (GRPO/GiGPO).

Example:
    >>> import gymnasium as gym
    >>> import hiper_gym  # noqa: F401
    >>> from hiper_gym.wrappers import PlanExecute, PromptObservation
    >>> env = PromptObservation(PlanExecute(gym.make("HiPER-ALFWorld-v0")))  # doctest: +SKIP
    >>> prompt, info = env.reset(seed=0)  # doctest: +SKIP
"""

from .discrete_commands import DiscreteCommands
from .encode_text import EncodeText
from .episode_guard import EpisodeEndedError, EpisodeGuard
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
    "EpisodeEndedError",
    "EpisodeGuard",
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
