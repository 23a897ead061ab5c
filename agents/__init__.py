"""Learners: Hierarchical Advantage Estimation, HiPER's hierarchical PPO and the baselines."""
