"""The project's own promises: README commands match CI, the CLI answers, the layout maps."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import gymnasium as gym

import hiper_gym

ROOT = Path(__file__).resolve().parents[1]


def _ci_test_command() -> str:
    match = re.search(r"^TEST_COMMAND='(.+)'$", (ROOT / ".ci" / "run").read_text(), re.M)
    assert match, ".ci/run must define TEST_COMMAND"
    return match.group(1)


def test_readme_opens_with_the_ci_test_command() -> None:
    readme_head = "\n".join((ROOT / "README.md").read_text().splitlines()[:40])
    assert _ci_test_command() in readme_head


def test_readme_opens_with_the_main_job() -> None:
    readme_head = "\n".join((ROOT / "README.md").read_text().splitlines()[:40])
    assert "./scripts/setup.sh && .venv/bin/hiper-gym train" in readme_head


def test_every_env_id_is_registered() -> None:
    for env_id in hiper_gym.ENV_IDS:
        assert gym.spec(env_id).entry_point.startswith("hiper_gym.")


def test_folder_mapping_imports_wrappers_and_agents_from_their_folders() -> None:
    import hiper_gym.agents
    import hiper_gym.wrappers

    assert Path(hiper_gym.wrappers.__file__).parent == ROOT / "wrappers"
    assert Path(hiper_gym.agents.__file__).parent == ROOT / "agents"


def test_cli_lists_envs_and_rejects_unknown_commands() -> None:
    listed = subprocess.run(
        [sys.executable, "-m", "hiper_gym.cli", "list-envs"], capture_output=True, text=True
    )
    assert listed.returncode == 0
    assert all(env_id in listed.stdout for env_id in hiper_gym.ENV_IDS)
    unknown = subprocess.run(
        [sys.executable, "-m", "hiper_gym.cli", "frobnicate"], capture_output=True, text=True
    )
    assert unknown.returncode == 2
    assert "unknown command 'frobnicate'" in unknown.stderr


def test_readme_python_examples_run() -> None:
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert len(blocks) >= 3
    ran = subprocess.run(
        [sys.executable, "-c", "\n".join(blocks)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert "True 1.0" in ran.stdout  # the expert-following loop won its game
