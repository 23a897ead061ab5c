"""``EncodeText``: text observations and candidate commands as ``Box`` vectors for SB3."""

from __future__ import annotations

from collections import deque
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np

from .text_encoders import HashingBagOfWords, TextEncoder

#: The encoded observation: one flat float32 vector per key.
EncodedObservation = dict[str, np.ndarray]


class EncodeText(gym.Wrapper[EncodedObservation, Any, Any, Any], gym.utils.RecordConstructorArgs):
    """Encode a text env's observation, task, recent history and candidate commands as vectors.

    The observation becomes a ``Dict`` of ``Box`` spaces that SB3's ``MultiInputPolicy`` reads:

    * ``"task"`` ``(dim,)``: ``info[task_key]``.
    * ``"observation"`` ``(dim,)``: the current text observation.
    * ``"history"`` ``(dim,)``: the last ``history_length`` observations and commands, as one text.
    * ``"commands"`` ``(max_commands * dim,)``: block ``i`` (``[i * dim, (i + 1) * dim)``)
      encodes the command behind action ``i`` (zeros where there is none), so an index keeps a
      stable meaning across states. Flat, because SB3 expects 1-D vectors.
    * ``"similarities"`` ``(3 * max_commands,)``, only with ``command_similarities=True``: the
      cosine similarity of each command to the task, to the observation and to the history
      (three blocks of ``max_commands``). It hands a small policy a per-index relevance signal
      that it would otherwise have to learn from the raw vectors.

    Put it outside :class:`~hiper_gym.wrappers.DiscreteCommands`; ``max_commands`` is then read from
    that wrapper. ``info["raw_observation"]`` keeps the text.

    Example:
        >>> import gymnasium as gym
        >>> import hiper_gym  # noqa: F401
        >>> from hiper_gym.wrappers import DiscreteCommands
        >>> env = EncodeText(DiscreteCommands(gym.make("HiPER-ALFWorld-v0"), max_commands=64))
        >>> obs, info = env.reset(seed=0)
        >>> obs["commands"].shape, obs["observation"].shape
        ((16384,), (256,))
    """

    def __init__(
        self,
        env: gym.Env[Any, Any],
        encoder: TextEncoder | None = None,
        *,
        max_commands: int | None = None,
        history_length: int = 2,
        command_similarities: bool = False,
        task_key: str = "task",
        commands_key: str = "admissible_commands",
    ) -> None:
        """Wrap ``env``.

        Args:
            env: A text env, usually a :class:`~hiper_gym.wrappers.DiscreteCommands`.
            encoder: Maps a list of strings to an array ``(n, dim)``;
                ``None`` uses :class:`HashingBagOfWords` (256 dimensions, values in [-1, 1]).
                A user encoder (e.g. a sentence-transformers model) gets unbounded ``Box`` spaces.
            max_commands: Rows of ``"commands"``; ``None`` reads ``max_commands`` from the
                wrapped ``DiscreteCommands``.
            history_length: Recent (observation, command) pairs encoded into ``"history"``.
            command_similarities: Add the ``"similarities"`` key.
            task_key: ``info`` key of the task text.
            commands_key: ``info`` key of the admissible commands.
        """
        gym.utils.RecordConstructorArgs.__init__(
            self,
            encoder=encoder,
            max_commands=max_commands,
            history_length=history_length,
            command_similarities=command_similarities,
            task_key=task_key,
            commands_key=commands_key,
        )
        super().__init__(env)
        if max_commands is None:
            max_commands = int(env.get_wrapper_attr("max_commands"))
        self.encoder = HashingBagOfWords() if encoder is None else encoder
        self.max_commands = max_commands
        self.task_key = task_key
        self.commands_key = commands_key
        self.dim = int(np.asarray(self.encoder([""])).shape[-1])
        bound = 1.0 if isinstance(self.encoder, HashingBagOfWords) else np.inf
        vector = gym.spaces.Box(-bound, bound, shape=(self.dim,), dtype=np.float32)
        spaces = {
            "task": vector,
            "observation": vector,
            "history": vector,
            "commands": gym.spaces.Box(
                -bound, bound, shape=(max_commands * self.dim,), dtype=np.float32
            ),
        }
        if command_similarities:
            spaces["similarities"] = gym.spaces.Box(
                -1.0, 1.0, shape=(3 * max_commands,), dtype=np.float32
            )
        self.command_similarities = command_similarities
        self.observation_space = gym.spaces.Dict(spaces)
        self._history: deque[str] = deque(maxlen=2 * history_length)
        self._last_text = ""

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[EncodedObservation, dict[str, Any]]:
        """Reset the inner env and clear the history."""
        obs, info = self.env.reset(seed=seed, options=options)
        self._history.clear()
        return self._encode(obs, info)

    def step(self, action: Any) -> tuple[EncodedObservation, SupportsFloat, bool, bool, dict]:
        """Step the inner env and encode the result."""
        obs, reward, terminated, truncated, info = self.env.step(action)
        if self._history.maxlen:
            self._history.extend((self._last_text, str(info.get("command", action))))
        encoded, info = self._encode(obs, info)
        return encoded, reward, terminated, truncated, info

    def _encode(self, obs: Any, info: dict[str, Any]) -> tuple[EncodedObservation, dict]:
        self._last_text = str(obs)
        commands = [str(c) for c in info.get(self.commands_key, [])][: self.max_commands]
        texts = [str(info.get(self.task_key, "")), self._last_text, " ".join(self._history)]
        vectors = np.asarray(self.encoder(texts + commands), dtype=np.float32)
        command_rows = np.zeros((self.max_commands, self.dim), dtype=np.float32)
        command_rows[: len(commands)] = vectors[3:]
        info = dict(info)
        info["raw_observation"] = self._last_text
        encoded = {
            "task": vectors[0],
            "observation": vectors[1],
            "history": vectors[2],
            "commands": command_rows.reshape(-1),
        }
        if self.command_similarities:
            encoded["similarities"] = _cosine(command_rows, vectors[:3]).T.reshape(-1)
        return encoded, info


def _cosine(rows: np.ndarray, references: np.ndarray) -> np.ndarray:
    """Cosine similarities, shape ``(len(rows), len(references))``; 0 for a zero vector."""

    def unit(vectors: np.ndarray) -> np.ndarray:
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)

    return np.clip(unit(rows) @ unit(references).T, -1.0, 1.0).astype(np.float32)
