"""hiper-gym play: a person plays in the terminal (numbered commands, free text, quit/EOF)."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest

from hiper_gym.alfworld.env import ALFWorldEnv
from hiper_gym.play import main


def _walkthrough(game: int) -> list[str]:
    env = ALFWorldEnv(expert="walkthrough")
    return env.reset(options={"game": game})[1]["expert_plan"]


def test_typed_walkthrough_wins_and_a_new_episode_starts(monkeypatch, capsys) -> None:
    commands = _walkthrough(4)
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join(commands) + "\nquit\n"))
    assert main(["HiPER-ALFWorld-v0", "--game", "4", "--seed", "0"]) == 0
    out = capsys.readouterr().out
    assert f"Episode over (won): return 1 in {len(commands)} steps" in out
    assert out.count("-= Welcome to TextWorld, ALFRED! =-") == 2  # the next episode began


def test_numbers_pick_listed_commands_and_free_text_is_sent(monkeypatch, capsys) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("1\nwhat is this?\n"))  # then EOF
    assert main(["HiPER-ALFWorld-v0", "--game", "0"]) == 0
    out = capsys.readouterr().out
    assert "   1. go to " in out
    assert "You arrive at" in out and "Nothing happens." in out


def test_data_dir_and_split_reach_the_env(monkeypatch, capsys, real_data_dir) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    main(["HiPER-ALFWorld-v0", "--data-dir", str(real_data_dir), "--split", "valid_seen"])
    assert "Your task is to:" in capsys.readouterr().out


def test_cli_entry_point_plays_from_a_pipe() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "hiper_gym.cli", "play", "HiPER-ALFWorld-v0", "--game", "0"],
        input="2\nquit\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "Commands:" in result.stdout and "You arrive at" in result.stdout


def test_unknown_env_id_fails_loudly(monkeypatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    with pytest.raises(Exception, match="NoSuchEnv"):
        main(["NoSuchEnv-v0"])
