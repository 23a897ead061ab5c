"""``PlanExecute``: the action is the whole Plan-Execute response; the wrapper parses it."""

from __future__ import annotations

from typing import Any, SupportsFloat

import gymnasium as gym

from hiper_gym.spaces import DEFAULT_MAX_TEXT_LENGTH, text_space

from .parsing import FLAVORS, STYLES, env_flavor, parse_response


class PlanExecute(gym.Wrapper[Any, str, Any, str], gym.utils.RecordConstructorArgs):
    """Turn a text env into a Plan-Execute env: the action is the policy's whole response text.

    Each ``step`` parses the response with :func:`~hiper_gym.wrappers.parse_response` (the
    authors' rules, hiper-method.md §1.3), sends the primitive action to the inner env, and tracks
    the subgoal in force and the segment the turn belongs to (§1.4: turn 0 always starts a
    segment; a later turn starts one when its switch text is neither empty nor KEEP).

    ``info`` gains, on every ``reset`` and ``step`` (scalars and strings, which vector envs batch):

    * ``format_valid`` (bool): the response passed every §1.3 format rule (``True`` on reset).
    * ``switch`` (str): ``"KEEP"``, ``"SWITCH"`` or ``""``; the flavour's stored value for an
      invalid switch (WebShop stores ``"KEEP"``). ``""`` on reset.
    * ``subgoal`` (str or None): the subgoal in force after the turn; ``None`` on reset.
    * ``segment_index`` (int): 0 for the first segment; ``-1`` on reset, before any turn.
    * ``segment_start`` (bool): this turn opened a new segment.
    * ``turns_in_segment`` (int): turns of the current segment so far, this one included.
    * ``parsed_action`` (str): the primitive action that was sent (``""`` on reset).

    Any string is a legal action: a malformed response is sent as the authors' tail fallback,
    which the inner env treats as an inadmissible command, and ``format_valid`` is ``False``.

    Example:
        >>> import gymnasium as gym
        >>> import hiper_gym  # noqa: F401
        >>> env = PlanExecute(gym.make("HiPER-ALFWorld-v0"))  # doctest: +SKIP
        >>> obs, info = env.reset(seed=0)  # doctest: +SKIP
        >>> response = "<switch>SWITCH</switch><subgoal>find a mug</subgoal><action>look</action>"
        >>> obs, reward, terminated, truncated, info = env.step(response)  # doctest: +SKIP
        >>> info["segment_index"], info["subgoal"], info["parsed_action"]  # doctest: +SKIP
        (0, 'find a mug', 'look')
    """

    def __init__(
        self,
        env: gym.Env[Any, str],
        *,
        flavor: str | None = None,
        style: str = "plan_execute",
        tail_length: int | None = None,
        max_response_length: int = DEFAULT_MAX_TEXT_LENGTH,
    ) -> None:
        """Wrap ``env``.

        Args:
            env: A text env whose actions are command strings.
            flavor: ``"alfworld"`` or ``"webshop"`` parsing rules; ``None`` picks WebShop when the
                env id or class says so, else ALFWorld.
            style: ``"plan_execute"`` (three blocks) or ``"flat"`` (a ReAct-style response whose
                only block is ``<action>``; then there are no subgoals and an episode is one
                segment).
            tail_length: Characters of the response sent as the action when the ``<action>``
                block is missing; ``None`` uses the flavour's default (30 ALFWorld, 20 WebShop).
            max_response_length: Longest response accepted by the action space, in characters.
        """
        gym.utils.RecordConstructorArgs.__init__(
            self,
            flavor=flavor,
            style=style,
            tail_length=tail_length,
            max_response_length=max_response_length,
        )
        super().__init__(env)
        self.flavor = env_flavor(env) if flavor is None else flavor
        if self.flavor not in FLAVORS:
            raise ValueError(f"unknown flavor {self.flavor!r}; expected one of {FLAVORS}")
        if style not in STYLES:
            raise ValueError(f"unknown style {style!r}; expected one of {STYLES}")
        self.style = style
        self.tail_length = tail_length
        self.action_space = text_space(max_response_length)
        self._subgoal: str | None = None
        self._turn = 0
        self._segment_index = -1
        self._turns_in_segment = 0

    @property
    def current_subgoal(self) -> str | None:
        """The subgoal in force (``None`` before the first turn)."""
        return self._subgoal

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """Reset the inner env and forget the subgoal and the segments."""
        obs, info = self.env.reset(seed=seed, options=options)
        self._subgoal = None
        self._turn = 0
        self._segment_index = -1
        self._turns_in_segment = 0
        info = dict(info)
        info.update(
            format_valid=True,
            switch="",
            subgoal=None,
            segment_index=-1,
            segment_start=False,
            turns_in_segment=0,
            parsed_action="",
        )
        return obs, info

    def step(self, action: str) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        """Parse the response, send its primitive action, and report the segment in ``info``.

        Raises:
            TypeError: If ``action`` is not a string.
        """
        parsed = parse_response(
            action,
            current_subgoal=self._subgoal,
            flavor=self.flavor,
            style=self.style,
            tail_length=self.tail_length,
        )
        obs, reward, terminated, truncated, info = self.env.step(parsed.action)
        starts_segment = self._turn == 0 or parsed.is_new_segment_marker
        if starts_segment:
            self._segment_index += 1
            self._turns_in_segment = 0
        self._turns_in_segment += 1
        self._turn += 1
        self._subgoal = parsed.subgoal
        info = dict(info)
        info.update(
            format_valid=parsed.format_valid,
            switch=parsed.switch,
            subgoal=parsed.subgoal,
            segment_index=self._segment_index,
            segment_start=starts_segment,
            turns_in_segment=self._turns_in_segment,
            parsed_action=parsed.action,
        )
        return obs, reward, terminated, truncated, info
