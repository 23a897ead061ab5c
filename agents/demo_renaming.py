"""Renamed copies of ALFWorld demonstrations, so a cloned policy reads names instead of memorising.

A held-out ALFWorld game names objects and receptacles that no training game has (a ``cd``, a
``kettle``): a policy cloned from 36 training games learns which words go with which rooms, and
on a new word it guesses. A renamed copy of a demonstration episode replaces each object and
receptacle name, in the prompts, the commands and the subgoals alike, by another word, the same
one throughout the episode; the expert's choices are unchanged. Cloning the copies too teaches
the policy to act on the word the goal names, whatever the word is (entity anonymisation, a
common augmentation for text agents).

The appliances that carry a task's meaning keep their names (:data:`KEPT_NAMES`: heating is done
with the microwave, whatever the object is called). New names come from the training games' own
names and, for a word-level tokenizer built here, from :data:`PLACEHOLDER_WORDS`, made-up words
added to its vocabulary; never from held-out games.

Example:
    >>> rename_text("take cd 1 from desk 2", {"cd": "zqab", "desk": "shelf"})
    'take zqab 1 from shelf 2'
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

#: Names whose role a task depends on (its tool or lamp): never renamed.
KEPT_NAMES = frozenset(
    {"fridge", "microwave", "sinkbasin", "bathtubbasin", "stoveburner", "desklamp", "floorlamp"}
)
#: Made-up names (``zqaa`` ... ``zqhh``) a word-level tokenizer adds for renamed copies.
PLACEHOLDER_WORDS = tuple("zq" + a + b for a, b in itertools.product("abcdefgh", repeat=2))
#: ``encode(prompt, command, commands, subgoal, switch)``: a turn's prompt and response token ids.
Encode = Callable[[str, str, list[str], str | None, bool], tuple[list[int], list[int]]]
#: An entity in a command: a name followed by its number (``countertop 1``).
_ENTITY = re.compile(r"\b([a-z]+) \d+\b")


def entity_names(commands: Iterable[str]) -> set[str]:
    """The object and receptacle names that ``commands`` mention (``take x 1 from y 2``: x, y)."""
    return {match.group(1) for command in commands for match in _ENTITY.finditer(command.lower())}


def rename_text(text: str, mapping: Mapping[str, str]) -> str:
    """``text`` with every whole word of ``mapping`` replaced (other words untouched)."""
    if not mapping:
        return text
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, mapping)) + r")\b")
    return pattern.sub(lambda match: mapping[match.group(1)], text)


def episode_mapping(
    names: set[str], pool: Sequence[str], rng: np.random.Generator
) -> dict[str, str]:
    """A one-to-one renaming of ``names`` (but :data:`KEPT_NAMES`) into pool words not in them.

    Raises:
        ValueError: If the pool has fewer free words than names to rename.
    """
    renamed = sorted(names - KEPT_NAMES)
    free = [word for word in pool if word not in names]
    if len(free) < len(renamed):
        raise ValueError(f"{len(renamed)} names to rename but {len(free)} free words in the pool")
    chosen = rng.choice(len(free), size=len(renamed), replace=False)
    return {name: free[index] for name, index in zip(renamed, chosen, strict=True)}


def renamed_turn(turn: Any, mapping: Mapping[str, str], episode: int, encode: Encode) -> Any:
    """A copy of a :class:`~hiper_gym.agents.sft.Demonstration` under ``mapping``.

    ``encode(prompt, command, commands, subgoal, switch)`` returns the copy's prompt and response
    token ids, as the demonstration's own were made.
    """
    prompt = rename_text(turn.prompt, mapping)
    command = rename_text(turn.command, mapping)
    commands = [rename_text(text, mapping) for text in turn.admissible_commands]
    subgoal = None if turn.subgoal is None else rename_text(turn.subgoal, mapping)
    prompt_ids, response_ids = encode(prompt, command, commands, subgoal, turn.switch)
    return dataclasses.replace(
        turn,
        episode=episode,
        prompt=prompt,
        response=rename_text(turn.response, mapping),
        prompt_ids=prompt_ids,
        response_ids=response_ids,
        admissible_commands=commands,
        keep_copy=None if turn.keep_copy is None else rename_text(turn.keep_copy, mapping),
        command=command,
        subgoal=subgoal,
    )


def renamed_copies(
    turns: Sequence[Any],
    copies: int,
    pool: Sequence[str],
    rng: np.random.Generator,
    encode: Encode,
    first_episode: int,
) -> list[Any]:
    """``copies`` renamed copies of every demonstration episode in ``turns``, numbered on."""
    episodes: dict[int, list[Any]] = {}
    for turn in turns:
        episodes.setdefault(turn.episode, []).append(turn)
    copied = []
    episode = first_episode
    for _ in range(copies):
        for original in episodes.values():
            commands = [text for turn in original for text in turn.admissible_commands]
            mapping = episode_mapping(entity_names(commands), pool, rng)
            copied += [renamed_turn(turn, mapping, episode, encode) for turn in original]
            episode += 1
    return copied


def rename_pool(turns: Sequence[Any], placeholders: bool) -> list[str]:
    """The training games' renamable names, and the placeholder words if the vocabulary has them."""
    names = entity_names(text for turn in turns for text in turn.admissible_commands) - KEPT_NAMES
    return sorted(names) + (list(PLACEHOLDER_WORDS) if placeholders else [])
