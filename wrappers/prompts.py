"""The Plan-Execute prompt builder (hiper-method.md §1.2), shared by the wrapper and the learners.

Every turn is a fresh single-turn prompt: the task, the step count, the last ``history_length``
observation/action pairs, the current observation, the current subgoal (``None`` at the start) and
the admissible actions, then the demand for the three blocks. The wording is ours; the content, the
per-environment action formatting and the length fallback follow the authors' code.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from dataclasses import dataclass

from .parsing import FLAVORS, STYLES

#: Fields a template may use (``str.format`` names).
TEMPLATE_FIELDS: tuple[str, ...] = (
    "task",
    "task_line",
    "step_count",
    "current_step",
    "history_length",
    "history",
    "observation",
    "current_subgoal",
    "admissible_actions",
)

#: The authors fall back to the history-free WebShop prompt above 13,000 characters (§1.2).
DEFAULT_MAX_PROMPT_CHARS: dict[str, int | None] = {"alfworld": None, "webshop": 13_000}

_ROLE = {
    "alfworld": "You are an agent acting in the ALFRED household environment (a text game).",
    "webshop": "You are an expert autonomous shopping agent acting in the WebShop online store.",
}

_SUBGOAL_RULES = (
    "You steer by a SHORT-TERM sub-goal: a small objective that a few actions can reach, more "
    "than a single action and much less than the whole task. At every step you either KEEP the "
    "current sub-goal or SWITCH to a new one."
)

_HISTORY = (
    "You have already taken {step_count} step(s). Your last {history_length} observation(s) and "
    "the action(s) you took were:\n{history}\n"
    "This is step {current_step}. Your current observation is:\n{observation}"
)

_NO_HISTORY = "Your current observation is:\n{observation}"

_STATE = {
    "plan_execute": "Your current sub-goal: {current_subgoal}\n"
    "Your admissible actions now:\n{admissible_actions}",
    "flat": "Your admissible actions now:\n{admissible_actions}",
}

_ANSWER = {
    "plan_execute": (
        "Answer with exactly these three blocks, in this order, and no other text:\n"
        "<switch>KEEP or SWITCH</switch>\n"
        "<subgoal>the sub-goal you follow next</subgoal>\n"
        "<action>one admissible action</action>\n"
        "On KEEP, copy the current sub-goal into <subgoal> word for word. On SWITCH, write a new "
        "short sub-goal that a few actions can complete and that is not the whole task. Copy the "
        "action exactly as it appears in the admissible actions."
    ),
    "flat": (
        "Think briefly about what to do next, then give exactly one admissible action, copied "
        "exactly as listed, inside <action></action>."
    ),
}


@dataclass(frozen=True)
class PromptTemplate:
    """A pair of ``str.format`` templates: with history, and the history-free fallback.

    Both may use any of :data:`TEMPLATE_FIELDS`. ``{task_line}`` is ``"Your task is to: ...."``,
    or empty when the observation already contains the task (ALFWorld's first observation does).

    Attributes:
        with_history: Used once at least one step has been taken.
        without_history: Used at the first step, and when the history prompt exceeds the length cap.
    """

    with_history: str
    without_history: str

    def __post_init__(self) -> None:
        for name, template in (
            ("with_history", self.with_history),
            ("without_history", self.without_history),
        ):
            unknown = {
                field
                for _, field, _, _ in string.Formatter().parse(template)
                if field is not None and field not in TEMPLATE_FIELDS
            }
            if unknown:
                raise ValueError(
                    f"{name} uses unknown field(s) {sorted(unknown)}; allowed: {TEMPLATE_FIELDS}"
                )


def default_template(flavor: str = "alfworld", style: str = "plan_execute") -> PromptTemplate:
    """The suite's own wording of the authors' prompts for one flavour and style.

    Args:
        flavor: ``"alfworld"`` or ``"webshop"``.
        style: ``"plan_execute"`` (switch, subgoal and action) or ``"flat"`` (ReAct-style action).

    Returns:
        The template pair.
    """
    if flavor not in FLAVORS:
        raise ValueError(f"unknown flavor {flavor!r}; expected one of {FLAVORS}")
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r}; expected one of {STYLES}")
    head = _ROLE[flavor] + "{task_line}"
    if style == "plan_execute":
        head += "\n" + _SUBGOAL_RULES
    tail = _STATE[style] + "\n\n" + _ANSWER[style]
    return PromptTemplate(
        with_history="\n\n".join((head, _HISTORY, tail)),
        without_history="\n\n".join((head, _NO_HISTORY, tail)),
    )


def format_admissible_actions(actions: Sequence[str], flavor: str = "alfworld") -> str:
    """List the admissible actions the way the authors' prompts do (§1.2).

    ALFWorld drops ``help`` and joins quoted commands with a newline and a space; WebShop lists
    each quoted command followed by a comma, one per line.

    Example:
        >>> print(format_admissible_actions(["go to desk 1", "help", "look"]))
        'go to desk 1'
         'look'
    """
    if flavor == "webshop":
        return "\n".join(f"'{action}'," for action in actions)
    return "\n ".join(f"'{action}'" for action in actions if action != "help")


class PromptBuilder:
    """Build the per-turn prompt from the task, the observation, the history and the subgoal.

    The learners call :meth:`build` directly; :class:`~hiper_gym.wrappers.PromptObservation`
    calls it on every ``reset`` and ``step``.

    Example:
        >>> builder = PromptBuilder("alfworld")
        >>> prompt = builder.build(
        ...     task="put a mug in the coffee machine",
        ...     observation="You arrive at shelf 1. On the shelf 1, you see a mug 2.",
        ...     admissible_actions=["take mug 2 from shelf 1", "look"],
        ...     history=[("You are in a room.", "go to shelf 1")],
        ...     current_subgoal="find a mug",
        ... )
        >>> "[Observation 1: 'You are in a room.', Action 1: 'go to shelf 1']" in prompt
        True
        >>> "Your current sub-goal: find a mug" in prompt
        True
    """

    def __init__(
        self,
        flavor: str = "alfworld",
        *,
        style: str = "plan_execute",
        history_length: int = 2,
        max_prompt_chars: int | None | str = "auto",
        template: PromptTemplate | None = None,
    ) -> None:
        """Configure the builder.

        Args:
            flavor: ``"alfworld"`` or ``"webshop"``: role line and action formatting.
            style: ``"plan_execute"`` or ``"flat"`` (ReAct-style, ``<action>`` only).
            history_length: How many recent observation/action pairs the prompt shows.
            max_prompt_chars: Above this length the history-free template is used, as the authors
                do for WebShop; if even that is too long, the current observation is cut to fit.
                ``"auto"``: 13,000 for WebShop, no cap for ALFWorld. ``None``: no cap.
            template: Your own template pair; ``None`` uses :func:`default_template`.
        """
        if flavor not in FLAVORS:
            raise ValueError(f"unknown flavor {flavor!r}; expected one of {FLAVORS}")
        if history_length < 0:
            raise ValueError(f"history_length must be >= 0, got {history_length}")
        self.flavor = flavor
        self.style = style
        self.template = template or default_template(flavor, style)
        self.history_length = history_length
        if max_prompt_chars == "auto":
            max_prompt_chars = DEFAULT_MAX_PROMPT_CHARS[flavor]
        if max_prompt_chars is not None and int(max_prompt_chars) <= 0:
            raise ValueError(f"max_prompt_chars must be positive, got {max_prompt_chars}")
        self.max_prompt_chars: int | None = max_prompt_chars  # type: ignore[assignment]

    def build(
        self,
        *,
        task: str,
        observation: str,
        admissible_actions: Sequence[str],
        history: Sequence[tuple[str, str]] = (),
        current_subgoal: str | None = None,
        step_count: int | None = None,
    ) -> str:
        """The prompt for the next turn.

        Args:
            task: The overall task (``info["task"]``).
            observation: The current observation text.
            admissible_actions: The commands the env accepts now.
            history: ``(observation, action)`` pairs of the steps taken so far, oldest first; only
                the last ``history_length`` are shown. ``action`` is the parsed action sent.
            current_subgoal: The subgoal in force; ``None`` is shown as ``None``.
            step_count: Steps taken so far when ``history`` holds only the recent pairs;
                defaults to ``len(history)``.

        Returns:
            The prompt text.
        """
        step_count = len(history) if step_count is None else step_count
        recent = list(history)[-self.history_length :] if self.history_length else []
        fields = {
            "task": task,
            "task_line": f" Your task is to: {task.rstrip('.')}."
            if task and task not in observation
            else "",
            "step_count": step_count,
            "current_step": step_count + 1,
            "history_length": len(recent),
            "history": _format_history(recent, first_index=step_count - len(recent) + 1),
            "observation": observation,
            "current_subgoal": "None" if current_subgoal is None else current_subgoal,
            "admissible_actions": format_admissible_actions(admissible_actions, self.flavor),
        }
        if recent:
            prompt = self.template.with_history.format(**fields)
            if self.max_prompt_chars is None or len(prompt) <= self.max_prompt_chars:
                return prompt
        prompt = self.template.without_history.format(**fields)
        if self.max_prompt_chars is None or len(prompt) <= self.max_prompt_chars:
            return prompt
        # Still too long: shorten the observation, the only unbounded part left.
        overflow = len(prompt) - self.max_prompt_chars
        fields["observation"] = observation[: max(0, len(observation) - overflow - 3)] + "..."
        return self.template.without_history.format(**fields)[: self.max_prompt_chars]


def _task_line(task: str, observation: str) -> str:
    """The task sentence, unless the observation already states it (ALFWorld's first one does)."""
    if not task or task in observation:
        return ""
    return f" Your task is to: {task.rstrip('.')}."


def _format_history(pairs: Sequence[tuple[str, str]], first_index: int) -> str:
    """History lines ``[Observation k: '...', Action k: '...']`` with absolute step numbers."""
    return "\n".join(
        f"[Observation {index}: '{observation}', Action {index}: '{action}']"
        for index, (observation, action) in enumerate(pairs, start=first_index)
    )
