"""PromptObservation: the observation becomes the per-turn prompt, with history and subgoal."""

from __future__ import annotations

from hiper_gym.wrappers import PlanExecute, PromptBuilder, PromptObservation


def respond(switch: str, subgoal: str, action: str) -> str:
    return f"<switch>{switch}</switch><subgoal>{subgoal}</subgoal><action>{action}</action>"


def test_prompts_follow_the_episode(key_door_env):
    env = PromptObservation(PlanExecute(key_door_env))
    prompt, info = env.reset(seed=3)
    assert "Your current sub-goal: None" in prompt and "'take key'" in prompt
    assert info["raw_observation"] in prompt and "step(s)" not in prompt

    prompt, *_, info = env.step(respond("SWITCH", "get the key", "Take Key"))
    assert "Your current sub-goal: get the key" in prompt
    assert "Action 1: 'take key'" in prompt  # the parsed, lower-cased action
    assert "'open door'" in prompt and "You take the key." in prompt
    assert f"Your task is to: {info['task']}." in prompt

    prompt, *_ = env.step("garbage with no tags")
    assert "Action 2: 'garbage with no tags'" in prompt
    assert env.history[-1] == ("You take the key.", "garbage with no tags")

    env.reset(seed=3)
    assert env.history == []


def test_flat_stack_gets_the_flat_prompt(key_door_env):
    prompt, _ = PromptObservation(PlanExecute(key_door_env, style="flat")).reset(seed=0)
    assert "<switch>" not in prompt and "<action></action>" in prompt


def test_custom_builder_is_used(key_door_env):
    builder = PromptBuilder("alfworld", history_length=0)
    env = PromptObservation(PlanExecute(key_door_env), builder)
    env.reset(seed=0)
    prompt, *_ = env.step(respond("SWITCH", "k", "take key"))
    assert "Observation 1" not in prompt and env.builder is builder


def test_check_env_on_the_tiny_env(key_door_env, checked_env):
    checked_env(PromptObservation(PlanExecute(key_door_env)))


def test_alfworld_prompt_stack(alfworld, checked_env):
    env = PromptObservation(PlanExecute(alfworld(expert="walkthrough")))
    prompt, info = env.reset(seed=0, options={"game": 0})
    assert prompt.count(info["task"]) == 1
    assert "ALFRED" in prompt and "Your current sub-goal: None" in prompt
    assert "'help'" not in prompt
    first_command = info["expert_plan"][0]
    assert f"'{first_command}'" in prompt
    prompt, *_ = env.step(respond("SWITCH", "start", first_command))
    assert f"Action 1: '{first_command}'" in prompt
    assert len(prompt) < env.observation_space.max_length
    checked_env(env)
