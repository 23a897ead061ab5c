"""``DiscreteCommands``: admissible commands as ``Discrete(max_commands)`` with action masks."""

from __future__ import annotations

from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np

#: Sent to the inner env for an index with no command behind it. Text envs of this suite treat
#: any inadmissible string as a no-op that still counts as a step, so the time limit still applies.
DEFAULT_INVALID_COMMAND = ""


class DiscreteCommands(gym.Wrapper[Any, np.int64, Any, str], gym.utils.RecordConstructorArgs):
    """Expose a text env's admissible commands as ``Discrete(max_commands)`` for ``MaskablePPO``.

    Action ``i`` plays ``info[commands_key][i]`` of the latest ``info``; :meth:`action_masks`
    marks the indices that have a command, which is what ``sb3_contrib.MaskablePPO`` reads. Pair it
    with :class:`~hiper_gym.wrappers.EncodeText`, which puts the candidate commands into the
    observation so index ``i`` keeps a stable meaning for the policy.

    An index without a command (masked out) is a flagged no-op: the wrapper sends
    ``invalid_command`` and sets ``info["action_in_range"] = False``. ``info["command"]`` is always
    the text that was sent. Commands past ``max_commands`` cannot be chosen;
    ``info["commands_dropped"]`` counts them.

    Example:
        >>> import gymnasium as gym
        >>> import hiper_gym  # noqa: F401
        >>> env = DiscreteCommands(gym.make("HiPER-ALFWorld-v0"), max_commands=64)
        >>> obs, info = env.reset(seed=0)
        >>> mask = env.action_masks()
        >>> int(mask.sum()) == len(info["admissible_commands"])
        True
        >>> obs, reward, terminated, truncated, info = env.step(0)
        >>> info["command"] == info["admissible_commands"][0] or info["action_in_range"]
        True
    """

    def __init__(
        self,
        env: gym.Env[Any, str],
        max_commands: int = 64,
        *,
        commands_key: str = "admissible_commands",
        invalid_command: str = DEFAULT_INVALID_COMMAND,
    ) -> None:
        """Wrap ``env``.

        Args:
            env: A text env that lists its admissible commands in ``info``.
            max_commands: ``K_max``, the size of the discrete action space.
            commands_key: The ``info`` key of the command list.
            invalid_command: What an index without a command sends to the env.
        """
        gym.utils.RecordConstructorArgs.__init__(
            self,
            max_commands=max_commands,
            commands_key=commands_key,
            invalid_command=invalid_command,
        )
        super().__init__(env)
        if max_commands < 1:
            raise ValueError(f"max_commands must be >= 1, got {max_commands}")
        self.max_commands = max_commands
        self.commands_key = commands_key
        self.invalid_command = invalid_command
        self.action_space = gym.spaces.Discrete(max_commands)
        self._commands: list[str] = []

    @property
    def commands(self) -> list[str]:
        """The commands behind indices ``0 .. len - 1`` now (at most ``max_commands``)."""
        return list(self._commands)

    def action_masks(self) -> np.ndarray:
        """Boolean mask of shape ``(max_commands,)``: which indices have a command."""
        mask = np.zeros(self.max_commands, dtype=bool)
        mask[: len(self._commands)] = True
        return mask

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """Reset the inner env and read its commands."""
        obs, info = self.env.reset(seed=seed, options=options)
        info = self._read_commands(info)
        info["command"] = ""
        info["action_in_range"] = True
        return obs, info

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        """Play the command at index ``action``.

        Raises:
            TypeError: If ``action`` is not an integer.
        """
        if not np.issubdtype(np.asarray(action).dtype, np.integer) or np.ndim(action) != 0:
            raise TypeError(f"action must be an integer index, got {action!r}")
        index = int(action)
        in_range = 0 <= index < len(self._commands)
        command = self._commands[index] if in_range else self.invalid_command
        obs, reward, terminated, truncated, info = self.env.step(command)
        info = self._read_commands(info)
        info["command"] = command
        info["action_in_range"] = in_range
        return obs, reward, terminated, truncated, info

    def _read_commands(self, info: dict[str, Any]) -> dict[str, Any]:
        commands = [str(command) for command in info.get(self.commands_key, [])]
        self._commands = commands[: self.max_commands]
        info = dict(info)
        info["commands_dropped"] = max(0, len(commands) - self.max_commands)
        return info
