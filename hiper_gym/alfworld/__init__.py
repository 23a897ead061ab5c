"""ALFWorld's household text games on the real engine: the env, its data index, expert and games.

The environment, registered as ``HiPER-ALFWorld-v0``, is :class:`.env.ALFWorldEnv`.
Submodules are imported on demand, so ``import hiper_gym`` does not load the engine.
"""
