"""The fast text generation of the engine: same game, step for step, as textworld's own PddlEnv."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hiper_gym.alfworld.data import EMBEDDED_GAMES_DIR, index_games, read_game
from hiper_gym.alfworld.engine import (
    AlfredDemangler,
    FastGrammar,
    PddlEnv,
    SnapshotPddlEnv,
    textworld,
)

#: Commands no game knows: the engine answers "Nothing happens." and the state must not change.
_UNKNOWN_COMMANDS = ("jump", "take the moon", "", "go to")


def _engine(engine_class: type, facts: bool) -> Any:
    infos = textworld.EnvInfos(won=True, admissible_commands=True, facts=facts)
    return AlfredDemangler(engine_class(infos), shuffle=False)


@pytest.fixture(scope="module")
def engines() -> Iterator[tuple[Any, Any]]:
    """One stock engine and one of ours, reused across games (each holds a copy of the planner)."""
    yield _engine(PddlEnv, facts=False), _engine(SnapshotPddlEnv, facts=False)


def _trace(engine: Any, content: dict, seed: int, episodes: int, steps: int) -> list:
    """Everything an agent sees over random play: feedback, commands, score, won, done."""
    engine.load(content)
    rng, rows = random.Random(seed), []
    for _ in range(episodes):  # later episodes start from a reset after play
        state = engine.reset()
        rows.append((state["feedback"], state["admissible_commands"], state["won"]))
        for _ in range(steps):
            if rng.random() < 0.1:
                command = rng.choice(_UNKNOWN_COMMANDS)
            else:
                command = rng.choice(state["admissible_commands"])
            state, score, done = engine.step(command)
            rows.append((command, state["feedback"], state["admissible_commands"], score, done))
            rows.append((state["won"], state.get("facts") and sorted(map(str, state["facts"]))))
            if done:
                break
    return rows


#: One embedded train game per task type (six per type, sorted by type), and two valid_seen ones.
_TRACED_GAMES = [("train", index) for index in range(0, 36, 6)] + [
    ("valid_seen", 1),
    ("valid_seen", 8),
]


@pytest.mark.parametrize(("split", "index"), _TRACED_GAMES)
def test_long_random_traces_match_textworld(engines: tuple, split: str, index: int) -> None:
    stock, ours = engines
    game_file = index_games(EMBEDDED_GAMES_DIR, split)[index]
    content = read_game(game_file).content
    expected = _trace(stock, content, seed=index, episodes=2, steps=40)
    assert _trace(ours, content, seed=index, episodes=2, steps=40) == expected, game_file


def test_walkthrough_wins_identically(engines: tuple) -> None:
    """Winning traces too: the walkthrough's last step must score 1 in both engines."""
    stock, ours = engines
    for game_file in index_games(EMBEDDED_GAMES_DIR, "train")[::7]:
        game = read_game(game_file)
        traces = []
        for engine in (stock, ours):
            engine.load(game.content)
            state, rows = engine.reset(), []
            for command in game.walkthrough:
                state, score, done = engine.step(command)
                rows.append((state["feedback"], state["admissible_commands"], score, done))
            traces.append(rows)
        assert traces[0] == traces[1] and traces[1][-1][2:] == (1, True), game_file


def test_real_game_with_facts_matches_textworld(real_data_dir: Path) -> None:
    game_file = index_games(real_data_dir, "valid_seen")[0]
    content = read_game(game_file).content
    expected = _trace(_engine(PddlEnv, facts=True), content, seed=3, episodes=2, steps=40)
    assert _trace(_engine(SnapshotPddlEnv, facts=True), content, seed=3, episodes=2, steps=40) == (
        expected
    )


def test_textworld_itself_is_not_patched() -> None:
    """Only our engine's grammars are fast ones; a user's own PddlEnv keeps textworld's."""
    from textworld.envs.pddl.textgen import ContextSensitiveGrammar

    content = read_game(index_games(EMBEDDED_GAMES_DIR)[0]).content
    stock = PddlEnv(textworld.EnvInfos())
    stock.load(content)
    assert type(stock._logic.grammar) is ContextSensitiveGrammar
    assert ContextSensitiveGrammar.derive is not FastGrammar.derive
    ours = SnapshotPddlEnv(textworld.EnvInfos())
    ours.load(content)
    assert type(ours._logic.grammar) is FastGrammar


def test_repeated_derivations_do_not_alter_the_shared_parses() -> None:
    """The memoised parses are shared, so deriving the same template twice gives the same text."""
    content = read_game(index_games(EMBEDDED_GAMES_DIR)[1]).content
    engine = AlfredDemangler(SnapshotPddlEnv(textworld.EnvInfos()), shuffle=False)
    engine.load(content)
    first = engine.reset()["feedback"]
    assert engine.reset()["feedback"] == first
