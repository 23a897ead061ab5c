"""The expert behind ``info["expert_plan"]``: the stored walkthrough, then ALFWorld's handcoded one.

Two modes:

- ``"walkthrough"``: the game's stored shortest plan (every current-format game has one) while the
  agent has followed it; after the agent deviates, ALFWorld's handcoded expert (which needs
  ``traj_data.json`` beside the game) proposes the next command, or the plan is empty without it.
- ``"handcoded"``: ALFWorld's handcoded expert throughout, as ALFWorld's DAgger training uses it
  (``["look"]`` at reset, then one command per step). Needs ``traj_data.json``.

The handcoded expert draws from Python's global ``random``; its draws are made from a private
state seeded by the environment, so episodes are reproducible and the caller's ``random`` is left
untouched.

Example:
    >>> tracker = ExpertTracker("walkthrough", ["go to desk 1", "use desklamp 1"], None, seed=0)
    >>> tracker.plan
    ['go to desk 1', 'use desklamp 1']
    >>> tracker.observe_step("go to desk 1", {"admissible_commands": []})
    >>> tracker.plan
    ['use desklamp 1']
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

EXPERT_TYPES: tuple[str, ...] = ("walkthrough", "handcoded")


class ExpertTracker:
    """Follows one episode and answers the expert's remaining commands, the next one first.

    Args:
        expert_type: ``"walkthrough"`` or ``"handcoded"``.
        walkthrough: The game's stored winning command list.
        traj_data_game_file: The game file when ``traj_data.json`` lies beside it, else ``None``.
        seed: Seed of the handcoded expert's private random state.
    """

    def __init__(
        self,
        expert_type: str,
        walkthrough: Sequence[str],
        traj_data_game_file: Path | None,
        seed: int,
    ) -> None:
        if expert_type not in EXPERT_TYPES:
            raise ValueError(f"unknown expert {expert_type!r} (known: {', '.join(EXPERT_TYPES)})")
        self._walkthrough = list(walkthrough)
        self._next_index = 0
        # The walkthrough leads until the first deviation; "handcoded" never uses it.
        self._on_walkthrough = expert_type == "walkthrough"
        self._handcoded: Any = None
        self._handcoded_next: str | None = None
        self._random_state = random.Random(seed).getstate()
        if traj_data_game_file is not None:
            from hiper_gym.alfworld.engine import HandCodedTWAgent

            self._handcoded = HandCodedTWAgent(max_steps=200)
            self._handcoded.reset(str(traj_data_game_file))

    @property
    def needs_facts(self) -> bool:
        """Whether engine states must carry ``facts`` (the handcoded expert reads them)."""
        return self._handcoded is not None

    @property
    def plan(self) -> list[str]:
        """The expert's remaining commands, the next one first (empty when it has none)."""
        if self._on_walkthrough:
            return self._walkthrough[self._next_index :]
        return [self._handcoded_next] if self._handcoded_next else []

    def observe_reset(self, state: dict[str, Any]) -> None:
        """Show the handcoded expert the first observation (its first command is always "look")."""
        if self._handcoded is not None:
            with self._private_random():
                self._handcoded.observe(state["feedback"])
            self._handcoded_next = "look"

    def observe_step(self, command: str, state: dict[str, Any]) -> None:
        """Record an admissible command the agent took and the state it led to."""
        if self._on_walkthrough:
            on_plan = self._next_index < len(self._walkthrough)
            if on_plan and command == self._walkthrough[self._next_index]:
                self._next_index += 1
            else:
                self._on_walkthrough = False
        if self._handcoded is not None:
            self._handcoded_next = self._ask_handcoded(command, state)

    def _ask_handcoded(self, command: str, state: dict[str, Any]) -> str | None:
        admissible = state["admissible_commands"]
        try:
            with self._private_random():
                proposal = self._handcoded.act(state, 0, state["won"], command)
        except Exception:  # its timeout and its heuristics raise bare Exceptions
            # The heuristic expert gives up (timeout or a state it does not model).
            self._handcoded = None
            return None
        # As ALFWorld's AlfredExpert: a proposal the state does not allow becomes "look", after
        # which the expert re-reads the room (it proposes e.g. closing a drawer it has left).
        return proposal if proposal in admissible else "look"

    @contextmanager
    def _private_random(self) -> Iterator[None]:
        outer_state = random.getstate()
        random.setstate(self._random_state)
        try:
            yield
        finally:
            self._random_state = random.getstate()
            random.setstate(outer_state)
