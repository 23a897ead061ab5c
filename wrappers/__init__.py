"""Env-agnostic Gymnasium wrappers: Plan-Execute parsing, prompts, options (semi-MDP), SB3 bridge."""
