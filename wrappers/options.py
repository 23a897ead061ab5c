"""``Options``: the generic semi-MDP wrapper. One ``step`` runs a whole option.

The high-level action is an *option* (a subgoal string, an index, any object) that a user-given
low-level policy executes, one primitive action at a time, until the option's termination
function fires, the episode ends, or a step cap is reached. The wrapper returns the SMDP
transition: the next state, the discounted reward ``sum_k gamma^k r_k`` and, in
``info["smdp"]``, everything needed to bootstrap with ``gamma^k`` (Sutton, Precup & Singh, 1999).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, SupportsFloat

import gymnasium as gym

from hiper_gym.spaces import text_space

#: ``policy(option, observation, info) -> primitive action``
LowLevelPolicy = Callable[[Any, Any, dict[str, Any]], Any]
#: ``termination(option, observation, info) -> bool``, checked after every primitive step.
Termination = Callable[[Any, Any, dict[str, Any]], bool]

#: Why an option stopped (``info["smdp"]["stop_reason"]``).
STOP_REASONS: tuple[str, ...] = ("termination", "terminated", "truncated", "step_cap")


class Options(gym.Wrapper[Any, Any, Any, Any], gym.utils.RecordConstructorArgs):
    """Run options to completion: one high-level ``step`` is one SMDP transition.

    ``info`` is the last primitive step's ``info`` plus ``info["smdp"]``, a dict with:

    * ``option``: the option that ran.
    * ``duration`` (int): primitive steps taken, ``k >= 1``.
    * ``rewards`` (list[float]): the primitive rewards ``r_0 .. r_{k-1}``.
    * ``discount`` (float): ``gamma ** k``, the factor for bootstrapping from the next state.
    * ``ended_early`` (bool): the option stopped before its termination function fired (the
      episode ended or the step cap was hit).
    * ``stop_reason`` (str): ``"termination"``, ``"terminated"``, ``"truncated"`` or
      ``"step_cap"`` (the termination function wins when several hold at once).
    * ``actions`` (list): the primitive actions the low-level policy took.

    Example:
        >>> import gymnasium as gym
        >>> env = Options(
        ...     gym.make("CliffWalking-v1"),
        ...     policy=lambda option, obs, info: option,  # the option is a direction to walk
        ...     termination=lambda option, obs, info: obs % 12 in (0, 11),  # a side wall
        ...     option_space=gym.spaces.Discrete(4),
        ...     gamma=0.5,
        ...     max_option_steps=20,
        ... )
        >>> obs, info = env.reset(seed=0)
        >>> obs, reward, terminated, truncated, info = env.step(0)  # up: already at the wall
        >>> obs, reward, info["smdp"]["duration"]
        (24, -1.0, 1)
        >>> obs, reward, terminated, truncated, info = env.step(1)  # right, along row 2
        >>> obs, info["smdp"]["duration"], info["smdp"]["discount"], round(reward, 4)
        (35, 11, 0.00048828125, -1.999)
    """

    def __init__(
        self,
        env: gym.Env[Any, Any],
        policy: LowLevelPolicy,
        termination: Termination,
        *,
        option_space: gym.Space[Any] | None = None,
        gamma: float = 1.0,
        max_option_steps: int = 10,
    ) -> None:
        """Wrap ``env``.

        Args:
            env: Any Gymnasium env.
            policy: The low-level policy: maps (option, observation, info) to a primitive action.
                It may keep state (for example the last command it issued).
            termination: The option's termination condition, checked after each primitive step.
            option_space: The high-level action space; ``None`` means subgoal strings
                (:func:`hiper_gym.spaces.text_space`). Options are passed to ``policy`` as given.
            gamma: The per-step discount used for the SMDP reward and ``discount``.
            max_option_steps: The most primitive steps one option may take.
        """
        gym.utils.RecordConstructorArgs.__init__(
            self,
            policy=policy,
            termination=termination,
            option_space=option_space,
            gamma=gamma,
            max_option_steps=max_option_steps,
        )
        super().__init__(env)
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {gamma}")
        if max_option_steps < 1:
            raise ValueError(f"max_option_steps must be >= 1, got {max_option_steps}")
        self.policy = policy
        self.termination = termination
        self.gamma = gamma
        self.max_option_steps = max_option_steps
        self.action_space = text_space() if option_space is None else option_space
        self._observation: Any = None
        self._info: dict[str, Any] = {}

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """Reset the inner env (``options`` here are Gymnasium reset options, not RL options)."""
        self._observation, self._info = self.env.reset(seed=seed, options=options)
        return self._observation, self._info

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        """Run the option ``action`` until it terminates; return the SMDP transition."""
        option = action
        rewards: list[float] = []
        actions: list[Any] = []
        terminated = truncated = False
        stop_reason = "step_cap"
        observation, info = self._observation, self._info
        for _ in range(self.max_option_steps):
            primitive = self.policy(option, observation, info)
            observation, reward, terminated, truncated, info = self.env.step(primitive)
            actions.append(primitive)
            rewards.append(float(reward))
            if self.termination(option, observation, info):
                stop_reason = "termination"
            elif terminated:
                stop_reason = "terminated"
            elif truncated:
                stop_reason = "truncated"
            if stop_reason != "step_cap":
                break
        self._observation, self._info = observation, info
        info = dict(info)
        info["smdp"] = {
            "option": option,
            "duration": len(rewards),
            "rewards": rewards,
            "discount": self.gamma ** len(rewards),
            "ended_early": stop_reason != "termination",
            "stop_reason": stop_reason,
            "actions": actions,
        }
        return observation, _discounted_sum(rewards, self.gamma), terminated, truncated, info


def _discounted_sum(rewards: Sequence[float], gamma: float) -> float:
    """``sum_k gamma^k r_k``."""
    return sum(reward * gamma**k for k, reward in enumerate(rewards))


class FollowPlan:
    """An oracle low-level policy for text envs with a plan in ``info`` (e.g. ALFWorld's expert).

    The option is a target command (a subgoal such as ``"take mug 1 from shelf 1"``). The policy
    plays the next command of ``info[plan_key]`` (the remaining expert plan) and the option
    terminates once the target command has been played. :func:`plan_to_subgoals` cuts a plan into
    such targets.

    Example:
        >>> follow = FollowPlan()
        >>> follow.act("take mug 1 from shelf 1", "", {"expert_plan": ["go to shelf 1", "x"]})
        'go to shelf 1'
        >>> follow.done("take mug 1 from shelf 1", "", {})
        False
    """

    def __init__(self, plan_key: str = "expert_plan", fallback_command: str = "look") -> None:
        """Configure the oracle.

        Args:
            plan_key: ``info`` key of the remaining plan, next command first.
            fallback_command: Played when the plan is empty or missing.
        """
        self.plan_key = plan_key
        self.fallback_command = fallback_command
        self.last_command: str | None = None

    def act(self, option: Any, observation: Any, info: dict[str, Any]) -> str:
        """The plan's next command."""
        plan = info.get(self.plan_key) or [self.fallback_command]
        self.last_command = str(plan[0])
        return self.last_command

    def done(self, option: Any, observation: Any, info: dict[str, Any]) -> bool:
        """True once the option's target command has just been played."""
        return self.last_command is not None and self.last_command == str(option)


def plan_to_subgoals(
    plan: Sequence[str], is_navigation: Callable[[str], bool] | None = None
) -> list[str]:
    """Cut a plan into subgoals: each subgoal is a non-navigation command and the moves before it.

    Args:
        plan: A winning command sequence.
        is_navigation: Which commands only move the agent; ``None`` means ``"go to ..."``.

    Returns:
        The target commands, in order; trailing navigation is its own last subgoal.

    Example:
        >>> plan_to_subgoals(["go to shelf 1", "take mug 1 from shelf 1", "go to desk 1",
        ...                   "move mug 1 to desk 1"])
        ['take mug 1 from shelf 1', 'move mug 1 to desk 1']
    """
    is_navigation = is_navigation or (lambda command: command.startswith("go to "))
    subgoals = [command for command in plan if not is_navigation(command)]
    if plan and is_navigation(plan[-1]):
        subgoals.append(plan[-1])
    return subgoals
