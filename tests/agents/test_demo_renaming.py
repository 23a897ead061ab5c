"""Renamed copies of ALFWorld demonstrations (``hiper-gym sft --rename-copies``)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from hiper_gym.agents import demo_renaming, sft
from hiper_gym.agents.demo_renaming import (
    KEPT_NAMES,
    PLACEHOLDER_WORDS,
    entity_names,
    episode_mapping,
    rename_text,
)


def test_only_whole_names_are_renamed():
    text = "On the cd 1, you see a cdplayer 2. Your task is to: put some cd on desk."
    assert rename_text(text, {"cd": "zqaa"}) == (
        "On the zqaa 1, you see a cdplayer 2. Your task is to: put some zqaa on desk."
    )
    assert rename_text(text, {}) == text


def test_entities_are_the_numbered_names_of_commands():
    commands = ["take cd 1 from desk 2", "go to shelf 10", "look", "use desklamp 1"]
    assert entity_names(commands) == {"cd", "desk", "shelf", "desklamp"}


def test_a_mapping_is_one_to_one_keeps_the_tools_and_avoids_the_episodes_names():
    names = {"cd", "desk", "fridge", "shelf"}
    pool = ["desk", "shelf", "a1", "a2", "a3", "a4"]
    for seed in range(20):
        mapping = episode_mapping(names, pool, np.random.default_rng(seed))
        assert set(mapping) == {"cd", "desk", "shelf"}  # the fridge keeps its name
        assert len(set(mapping.values())) == 3 and set(mapping.values()) <= {"a1", "a2", "a3", "a4"}
    with pytest.raises(ValueError, match="3 names to rename but 2 free words"):
        episode_mapping(names, ["a1", "a2"], np.random.default_rng(0))


@pytest.fixture(scope="module")
def renamed(tmp_path_factory):
    args = dataclasses.replace(
        sft.Args(),
        output_dir=str(tmp_path_factory.mktemp("renaming")),
        demo_episodes=4,
        rename_copies=2,
        eval_episodes=0,
        progress=False,
    )
    tokenizer = sft.build_tokenizer(args)
    actor = sft.build_actor(args, tokenizer)
    grammar = sft.build_grammar(args, tokenizer, actor)
    return args, tokenizer, grammar, sft.collect_demonstrations(args, tokenizer, grammar)


def test_copies_replay_the_expert_under_new_names(renamed):
    args, tokenizer, grammar, demos = renamed
    originals = {t.episode: t for t in demos.turns if t.episode < demos.episodes}
    won = len({t.episode for t in originals.values()})
    copies = [t for t in demos.turns if t.episode >= demos.episodes]
    assert len({t.episode for t in copies}) == 2 * won
    sft.demo_masks(demos, grammar, constrained=True)  # every copy is inside the grammar
    training_names = entity_names(c for t in originals.values() for c in t.admissible_commands)
    for turn in copies:
        source = next(
            t
            for t in demos.turns
            if t.episode < demos.episodes and t.game == turn.game and t.turn == turn.turn
        )
        mapping = {
            old: new
            for old, new in zip(source.command.split(), turn.command.split(), strict=True)
            if old != new
        }
        assert not set(mapping) & KEPT_NAMES
        assert mapping or entity_names([source.command]) <= KEPT_NAMES  # e.g. "use desklamp 1"
        assert set(mapping.values()) <= training_names | set(PLACEHOLDER_WORDS)  # no held-out name
        assert turn.command == rename_text(source.command, mapping)
        assert turn.switch == source.switch
        assert tokenizer.decode(turn.response_ids, skip_special_tokens=True) == turn.response
        unknown = tokenizer.unk_token_id
        assert unknown not in turn.prompt_ids and unknown not in turn.response_ids


def test_renaming_is_alfworld_only_and_counts_copies(tmp_path, capsys):
    argv = ["--output-dir", str(tmp_path), "--env-id", "HiPER-WebShop-v0", "--rename-copies", "1"]
    assert sft.main(argv) == 2
    assert "ALFWorld only" in capsys.readouterr().err
    assert sft.main(["--output-dir", str(tmp_path), "--rename-copies", "-1"]) == 2
    assert demo_renaming.rename_pool([], placeholders=True) == list(PLACEHOLDER_WORDS)
