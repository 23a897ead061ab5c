"""Hierarchical Advantage Estimation (HAE), HiPER's credit assignment, plus flat GAE.

HiPER (Peng et al. 2026, arXiv 2602.16165) splits every turn of an LLM agent into three decisions:
a switch decision (``<switch>KEEP|SWITCH</switch>``), a subgoal (``<subgoal>...</subgoal>``) and a
primitive action (``<action>...</action>``). Consecutive turns under one subgoal form a *segment*.
HAE gives each decision its own advantage:

* ``a_low``: GAE over the turns of one segment, bootstrapped at the segment's end from the high
  value of the next segment start (boundary-aware bootstrapping). Trains the action tokens.
* ``a_high``: GAE over segments treated as semi-MDP macro-steps (discount ``gamma ** d`` for a
  segment of ``d`` turns). Defined on segment starts only; trains the subgoal tokens there.
* ``a_term``: switch advantage. ``"released"`` (the authors' code): the Monte Carlo return to the
  segment end plus the high-level bootstrap, minus a learned termination value ``v_term``.
  ``"paper"``: ``(q - beta) * (v_high - v_low)``.

All equations follow ``/work/shared/specs/hiper-method.md`` §2.2 and §3 (the released estimator,
whose pseudo-code is §2.6). The estimator is vectorised: flat per-turn rows are laid out on a
time-major ``[max_turns, episodes]`` grid, streamed backwards in cache-sized blocks of turn
positions, and every recursion is a reverse scan over turn positions (no loop over turns or
episodes in Python). ``benchmarks/hae_speed.py`` times it against the spec's per-episode loop.

Example:
    >>> import numpy as np
    >>> from hiper_gym.agents.hae import HAEConfig, compute_hae
    >>> result = compute_hae(
    ...     episode_id=[0, 0, 0], turn_index=[0, 1, 2], env_reward=[0.0, 0.0, 10.0],
    ...     done=[False, False, True], format_valid=[True, True, True],
    ...     is_switch=[True, False, True], has_switch_block=[True, True, True],
    ...     subgoal_span=["<subgoal>a</subgoal>"] * 2 + ["<subgoal>b</subgoal>"],
    ...     v_low=[1.0, 2.0, 5.0], v_high=[1.0, 2.0, 5.0], v_term=[1.0, 2.0, 5.0],
    ...     config=HAEConfig(keep_penalty=0.0, norm_adv=False),
    ... )
    >>> result.segment_start.tolist()
    [True, False, True]
    >>> result.a_low.tolist()  # turn 1 ends segment 0 and bootstraps from v_high[2]
    [4.0, 3.0, 5.0]
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Literal

import numpy as np

try:  # torch is optional here: numpy callers do not need it
    import torch
except ImportError:  # pragma: no cover - the train extra installs torch
    torch = None

NORM_EPS = 1e-8
"""Added to the population std when standardizing advantages (as in the released code)."""


@dataclass(frozen=True)
class HAEConfig:
    """HAE hyperparameters, named and defaulted as in the authors' ``algorithm.hae`` config."""

    gamma: float = 1.0
    """Per-turn discount (``algorithm.gamma``)."""
    lam_turn: float = 1.0
    """GAE lambda of the low level, inside a segment (``algorithm.lam``)."""
    lam_seg: float = 0.95
    """GAE lambda of the high level, across segments (``algorithm.hae.lam_seg``)."""
    norm_adv: bool = True
    """Standardize ``a_low``, ``a_high`` and ``a_term`` separately over the batch."""
    bootstrap_truncated: bool = True
    """Bootstrap a truncated (not done) last segment from its own values instead of 0
    (ALFWorld True, WebShop False)."""
    keep_penalty: float = -0.3
    """Reward added on KEEP turns (ALFWorld -0.3, WebShop -3.5)."""
    keep_penalty_mode: Literal["normalized", "fixed"] = "normalized"
    """``"normalized"``: ``keep_penalty / T`` per KEEP turn, none when ``T <= 1``;
    ``"fixed"``: ``keep_penalty`` on every KEEP turn, turn 0 included."""
    invalid_action_penalty_coef: float = 0.1
    """Subtracted from the reward of every format-invalid turn."""
    keep_consistency_penalty: float = -0.3
    """Added on a KEEP turn ``t >= 1`` whose subgoal span differs from turn ``t - 1``'s."""
    keep_consistency_requires_both: bool = True
    """Only apply the consistency penalty when both turns have a subgoal block."""
    switch_advantage: Literal["released", "paper"] = "released"
    """``"released"``: ``G_t - v_term`` (the authors' code); ``"paper"``:
    ``(q_t - beta_t) * (v_high_t - v_low_t)`` with ``q_t = is_switch_t`` (the paper's switching
    gain; ``v_low_t`` stands in for ``V_low(s_t, o_{t-1})``, exact on KEEP turns)."""

    def __post_init__(self) -> None:
        for name in ("gamma", "lam_turn", "lam_seg"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"HAEConfig.{name} must be in [0, 1], got {value!r}")
        if self.keep_penalty_mode not in ("normalized", "fixed"):
            raise ValueError(
                f"HAEConfig.keep_penalty_mode must be 'normalized' or 'fixed', "
                f"got {self.keep_penalty_mode!r}"
            )
        if self.switch_advantage not in ("released", "paper"):
            raise ValueError(
                f"HAEConfig.switch_advantage must be 'released' or 'paper', "
                f"got {self.switch_advantage!r}"
            )


@dataclass
class HAEResult:
    """Per-turn HAE outputs, each of shape ``[N]`` and aligned with the input rows.

    ``a_*`` are raw advantages, ``r_*`` the critic targets (always built from the raw advantages)
    and ``a_*_norm`` the standardized advantages the actor uses (equal to the raw ones when
    ``norm_adv`` is False). ``a_high``, ``r_high`` and ``a_high_norm`` are NaN on rows that are not
    segment starts. Arrays are numpy, or torch tensors when the numeric inputs were tensors.
    """

    shaped_reward: Any
    """Env reward after the keep, invalid-format and consistency penalties."""
    segment_start: Any
    """Bool: the turn starts a segment (turn 0 or a SWITCH)."""
    a_low: Any
    """Low-level advantage (action tokens)."""
    r_low: Any
    """Low-value-head target ``a_low + v_low``."""
    a_high: Any
    """High-level advantage at segment starts (subgoal tokens), NaN elsewhere."""
    r_high: Any
    """High-value-head target ``a_high + v_high`` at segment starts, NaN elsewhere."""
    a_term: Any
    """Switch advantage (switch tokens, every turn)."""
    r_term: Any
    """Term-value-head target: return to the segment end plus the high-level bootstrap."""
    a_low_norm: Any
    """``a_low`` standardized over all turns."""
    a_high_norm: Any
    """``a_high`` standardized over segment starts that have a subgoal block."""
    a_term_norm: Any
    """``a_term`` standardized over turns that have a switch block."""

    def to_torch(self, device: Any = None, dtype: Any = None) -> HAEResult:
        """Return a copy whose arrays are torch tensors (``segment_start`` stays bool).

        Args:
            device: Target device; ``None`` keeps torch's default.
            dtype: Float dtype; ``None`` means ``torch.float32``.
        """
        if torch is None:  # pragma: no cover
            raise ImportError("HAEResult.to_torch needs torch (pip install hiper-gym[train])")
        float_dtype = dtype or torch.float32
        converted = {}
        for field in fields(self):
            array = _to_numpy(getattr(self, field.name))
            target = torch.bool if array.dtype == np.bool_ else float_dtype
            converted[field.name] = torch.as_tensor(array, dtype=target, device=device)
        return HAEResult(**converted)

    def to_numpy(self) -> HAEResult:
        """Return a copy whose arrays are numpy (float64 for the advantages)."""
        return HAEResult(**{f.name: _to_numpy(getattr(self, f.name)) for f in fields(self)})


@dataclass
class GAEResult:
    """Flat per-turn GAE outputs of shape ``[N]``, aligned with the input rows."""

    advantage: Any
    """Raw GAE advantage."""
    returns: Any
    """Value target ``advantage + value``."""
    advantage_norm: Any
    """``advantage`` standardized over all turns (a copy when ``norm_adv`` is False)."""


# ----------------------------------------------------------------------------------------------
# Public estimators
# ----------------------------------------------------------------------------------------------


def compute_hae(
    *,
    episode_id: Any,
    turn_index: Any,
    env_reward: Any,
    done: Any,
    format_valid: Any,
    is_switch: Any,
    has_switch_block: Any,
    subgoal_span: Any,
    v_low: Any,
    v_high: Any,
    v_term: Any,
    config: HAEConfig | None = None,
    beta: Any = None,
) -> HAEResult:
    """Hierarchical Advantage Estimation over a batch of turns.

    One row per turn, rows in any order: they are grouped by ``episode_id`` and sorted by
    ``turn_index`` (only the order of turn indices matters). All arguments have shape ``[N]``.
    Numeric inputs may be lists, numpy arrays or torch tensors; when any of ``env_reward``,
    ``v_low``, ``v_high``, ``v_term`` is a tensor the result holds tensors of that (float) dtype
    on that device, otherwise numpy arrays (``HAEResult.to_torch`` converts). The math runs in
    numpy float64 on the CPU. Integer episode ids are cheapest; other keys (e.g. ``traj_uid``
    strings) go through ``np.unique``, a sort.

    Args:
        episode_id: Episode key per row (ints or strings, e.g. ``traj_uid``).
        turn_index: Integer turn number within the episode; ``(episode_id, turn_index)`` unique.
        env_reward: Environment reward of the turn, before shaping.
        done: The episode terminated at this turn; only an episode's last row may be done
            (the trainer keeps the active turns only). A last row that is not done is truncated.
        format_valid: The response parsed (``info['is_action_valid']``); False costs
            ``invalid_action_penalty_coef``.
        is_switch: Boundary flag: the stripped, uppercased ``<switch>`` text is not in
            ``{"", "KEEP"}``. KEEP means ``not is_switch``. Turn 0 starts a segment regardless.
        has_switch_block: The response has a ``<switch>`` block (its switch tokens get
            ``a_term``, and it enters the ``a_term`` normalization set).
        subgoal_span: Exact text of the ``<subgoal>...</subgoal>`` block including tags, or None
            (``""`` counts as None). Drives the consistency penalty and the ``a_high`` norm set.
        v_low: Low value head ``V_L(s_t, o_t)``, read after ``</subgoal>``.
        v_high: High value head ``V_H(s_t)``, read at the last prompt token.
        v_term: Termination value head ``V_T(s_t, o_{t-1})``; unused (may be None) with
            ``switch_advantage="paper"``.
        config: Hyperparameters; ``HAEConfig()`` (the authors' ALFWorld setting) when None.
        beta: ``[N]`` policy probability of SWITCH, ``pi(q_t = 1 | s_t, o_{t-1})``; required by
            ``switch_advantage="paper"``, ignored by ``"released"``.

    Returns:
        HAEResult with arrays aligned to the input rows.

    Raises:
        ValueError: On mismatched lengths, non-finite numbers, non-integer turn indices,
            duplicate ``(episode_id, turn_index)`` pairs, a done flag before an episode's last
            row, or a missing or out-of-range ``beta`` in paper mode.
    """
    cfg = config or HAEConfig()
    paper = cfg.switch_advantage == "paper"
    grid = _Grid.build(episode_id, turn_index)
    n = grid.n_rows
    columns = {
        "r_env": _as_float(env_reward, "env_reward", n),
        "v_low": _as_float(v_low, "v_low", n),
        "v_high": _as_float(v_high, "v_high", n),
        "v_term": np.zeros(n) if paper and v_term is None else _as_float(v_term, "v_term", n),
        "done": _as_bool(done, "done", n),
        "switch": _as_bool(is_switch, "is_switch", n),
        "valid": _as_bool(format_valid, "format_valid", n),
        "has_switch": _as_bool(has_switch_block, "has_switch_block", n),
    }
    if paper:
        columns["beta"] = _as_probability(beta, n)
    grid.check_done_only_at_end(columns["done"])
    columns["has_subgoal"], columns["span_changed"] = _subgoal_flags(grid, subgoal_span, cfg)
    vh_last_start = grid.last_segment_start_value(columns["v_high"], columns["switch"])
    keep_penalty = _keep_penalty(grid.lengths, cfg)

    # Stream the time-major grid backwards in blocks of turn positions (see _BLOCK_CELLS);
    # ``later`` carries what a block needs from the turn after its last row.
    # One output block (slot n takes the empty cells): a single large allocation is backed by
    # huge pages, where eleven separate ones would each pay first-touch page faults.
    names = [f.name for f in fields(HAEResult) if f.name != "segment_start"]
    out = dict(zip(names, np.empty((len(names), n + 1)), strict=True))
    out["segment_start"] = np.empty(n + 1, dtype=bool)
    stats = {name: _RunningStats() for name in ("a_low", "a_high", "a_term")}
    later = _LaterTurn.none(grid.n_episodes)
    for first, stop in grid.reverse_blocks(_BLOCK_CELLS):
        rows = grid.block_rows(first, stop)
        block = {name: grid.gather(col, rows) for name, col in columns.items()}
        block["live"] = (rows < n).reshape(stop - first, grid.n_episodes)
        values, norm_sets, later = _hae_block(
            block, later, first == 0, keep_penalty, vh_last_start, cfg
        )
        for name, cells in values.items():
            out[name][rows] = cells.reshape(-1)
        for name, members in norm_sets.items():
            stats[name].add(values[name], members)
    for name, running in stats.items():
        (running if cfg.norm_adv else _RunningStats()).standardize(
            out[name], out=out[f"{name}_norm"]
        )
    result = HAEResult(**{name: array[:n] for name, array in out.items()})
    like = _first_tensor(env_reward, v_low, v_high, v_term)
    return result if like is None else result.to_torch(like.device, _float_dtype(like))


def compute_gae(
    *,
    episode_id: Any,
    turn_index: Any,
    reward: Any,
    done: Any,
    value: Any,
    gamma: float = 1.0,
    lam: float = 1.0,
    bootstrap_truncated: bool = True,
    norm_adv: bool = True,
) -> GAEResult:
    """Flat per-turn GAE (the PPO baseline's estimator), with the same row layout as HAE.

    ``delta_t = r_t + gamma * nd_t * V_{t+1} - V_t`` and
    ``A_t = delta_t + gamma * lam * nd_t * A_{t+1}`` per episode, where a truncated last turn
    (not done) bootstraps from its own value when ``bootstrap_truncated`` (else 0), the same
    convention as HAE's low level. No reward shaping is applied.

    Args:
        episode_id: ``[N]`` episode key per row.
        turn_index: ``[N]`` integer turn number; ``(episode_id, turn_index)`` unique.
        reward: ``[N]`` per-turn reward.
        done: ``[N]`` terminal flag; only an episode's last row may be done.
        value: ``[N]`` state value ``V(s_t)``.
        gamma: Discount.
        lam: GAE lambda.
        bootstrap_truncated: Bootstrap a truncated episode's last turn from its own value.
        norm_adv: Standardize ``advantage_norm`` over all turns (else a copy).

    Returns:
        GAEResult aligned with the input rows (numpy, or torch like ``reward``/``value``).

    Raises:
        ValueError: On malformed input, as :func:`compute_hae`.
    """
    for name, x in (("gamma", gamma), ("lam", lam)):
        if not 0.0 <= x <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {x!r}")
    grid = _Grid.build(episode_id, turn_index)
    r = grid.pad(_as_float(reward, "reward", grid.n_rows), 0.0)
    v = grid.pad(_as_float(value, "value", grid.n_rows), 0.0)
    done_rows = _as_bool(done, "done", grid.n_rows)
    grid.check_done_only_at_end(done_rows)
    not_done = 1.0 - grid.pad(done_rows, False)
    last = grid.live & ~_then(grid.live, False)
    v_next = np.where(last, v if bootstrap_truncated else 0.0, _then(v, 0.0))
    delta = r + gamma * not_done * v_next - v
    advantage = grid.unpad(_reverse_scan(delta, gamma * lam * not_done * ~last))
    stats = _RunningStats()
    if norm_adv:
        stats.add(advantage, np.ones(len(advantage), dtype=bool))
    result = GAEResult(
        advantage=advantage,
        returns=advantage + grid.unpad(v),
        advantage_norm=stats.standardize(advantage),
    )
    like = _first_tensor(reward, value)
    if like is None:
        return result
    dtype = _float_dtype(like)
    return GAEResult(
        **{
            f.name: torch.as_tensor(getattr(result, f.name), dtype=dtype, device=like.device)
            for f in fields(result)
        }
    )


# ----------------------------------------------------------------------------------------------
# The estimator's steps. Arrays below are time-major blocks [k, E] of the grid: row t holds turn
# t of every episode, so "the next turn" is the next row and a reverse scan walks up the rows.
# ----------------------------------------------------------------------------------------------


_BLOCK_CELLS = 8192
"""Grid cells per streamed block. Whole-batch temporaries of a few MB are fresh memory on every
call, and first-touch page faults then cost more than the arithmetic; blocks of 64 KB stay on
the malloc heap and in cache. A batch of <= 8192 cells (e.g. 128 x 50 turns) is one block."""


def _subgoal_flags(grid: _Grid, subgoal_span: Any, cfg: HAEConfig) -> tuple[np.ndarray, np.ndarray]:
    """Per row: ``has_subgoal``, and ``changed``: turn ``t >= 1`` whose span differs from ``t-1``'s.

    As in the released code: with ``keep_consistency_requires_both`` both spans must exist and
    differ; without it, a turn also counts when either span is missing.
    """
    spans = _as_spans(subgoal_span, grid.n_rows)
    exists = spans.astype(bool)  # None and "" are False
    previous, has_previous = grid.previous_row()
    differs = np.not_equal(spans, spans[previous]).astype(bool)
    if cfg.keep_consistency_requires_both:
        changed = exists & exists[previous] & differs
    else:
        changed = ~exists | ~exists[previous] | differs
    return exists, changed & has_previous


@dataclass
class _LaterTurn:
    """``[E]`` values of the turn right after a block (turn ``stop``), for every episode."""

    live: np.ndarray
    start: np.ndarray
    v_low: np.ndarray
    v_high: np.ndarray
    scan: np.ndarray
    """``[2, E]``: ``a_low`` and the term return ``G`` at that turn."""
    y: np.ndarray
    """High-level carry ``Y`` (see :func:`_hae_block`) at that turn."""

    @classmethod
    def none(cls, n_episodes: int) -> _LaterTurn:
        no, zero = np.zeros(n_episodes, dtype=bool), np.zeros(n_episodes)
        return cls(no, no, zero, zero, np.zeros((2, n_episodes)), zero)


def _hae_block(
    b: dict[str, np.ndarray],
    later: _LaterTurn,
    holds_turn_zero: bool,
    keep_penalty: np.ndarray,
    vh_last_start: np.ndarray,
    cfg: HAEConfig,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], _LaterTurn]:
    """HAE (spec §2.2, §3) on a block of turn positions ``[k, E]``.

    Returns the block's outputs, its normalization sets and the carry for the previous block.
    Empty cells hold finite filler; every use of them is multiplied by a False mask.
    """
    gamma, live, switch, vl, vh = cfg.gamma, b["live"], b["switch"], b["v_low"], b["v_high"]
    start = live & switch
    if holds_turn_zero:
        start[0] = live[0]  # turn 0 always starts a segment
    live_next, start_next = _then(live, later.live), _then(start, later.start)
    inside = live_next & ~start_next  # the next turn is in the same segment
    has_next = live_next & start_next  # a segment end followed by another segment
    last = live & ~live_next  # the episode's last turn
    r = _shape_rewards(b, keep_penalty, cfg)
    not_done = 1.0 - b["done"]

    # After a segment's last turn: the next start's V_H; on a truncated episode (not done, no
    # next segment) the last turn's own V_L (low level) and its segment start's V_H (high level
    # and term) when bootstrap_truncated, else 0. Done turns multiply all of it by 0.
    vh_next = _then(vh, later.v_high)
    low_next = inside * _then(vl, later.v_low) + has_next * vh_next
    boot = has_next * vh_next
    if cfg.bootstrap_truncated:
        low_next = low_next + last * vl
        boot = boot + last * vh_last_start
    boot = not_done * boot
    delta_low = r + gamma * not_done * low_next - vl
    # A_low_t = delta_t + gamma lam_turn nd A_low_{t+1}, reset at every segment end;
    # G_t = r_t + gamma G_{t+1}, with G_{end+1} := the high-level bootstrap Vb_k.
    low_and_term = _reverse_scan(
        np.stack([delta_low, r + gamma * ~inside * boot], axis=1),
        np.stack([gamma * cfg.lam_turn * not_done * inside, gamma * inside], axis=1),
        later.scan,
    )
    a_low, ret_term = low_and_term[:, 0], low_and_term[:, 1]
    # At a segment start G_s = R~_k + gamma^d_k nd Vb_k, so delta^high_k = G_s - V_H(s).
    # Y_t = gamma^(s'-t) A_high(s'), s' the first start at or after t, turns the SMDP recursion
    # A_high_k = delta_k + gamma^d_k lam_seg A_high_{k+1} into a scan over turns. (nd of a
    # segment end only matters for the episode's last segment, whose carry is 0 anyway.)
    y = _reverse_scan(start * (ret_term - vh), gamma * (start * cfg.lam_seg + ~start), later.y)
    if cfg.switch_advantage == "paper":
        a_term = (switch - b["beta"]) * (vh - vl)  # the paper's centred switching gain
    else:
        a_term = ret_term - b["v_term"]
    a_high = np.where(start, y, np.nan)  # defined on segment starts only
    values = {
        "shaped_reward": r,
        "segment_start": start,
        "a_low": a_low,
        "r_low": a_low + vl,
        "a_high": a_high,
        "r_high": a_high + vh,
        "a_term": a_term,
        "r_term": ret_term,
    }
    norm_sets = {
        "a_low": live,
        "a_high": start & b["has_subgoal"],
        "a_term": live & b["has_switch"],
    }
    carry = _LaterTurn(live[0], start[0], vl[0], vh[0], low_and_term[0], y[0])
    return values, norm_sets, carry


def _shape_rewards(
    b: dict[str, np.ndarray], keep_penalty: np.ndarray, cfg: HAEConfig
) -> np.ndarray:
    """Spec §3 shaping, in the released code's order: keep, invalid-format, consistency.

    ``keep_penalty`` is the ``[E]`` per-episode KEEP penalty (:func:`_keep_penalty`). Masks
    multiply the penalties (``x * 1.0`` and ``x + 0.0`` are exact), much faster than
    ``np.where``; empty cells get filler rewards, never read.
    """
    keep = ~b["switch"]
    r = b["r_env"] + keep * keep_penalty
    r = r - cfg.invalid_action_penalty_coef * ~b["valid"]
    return r + (keep & b["span_changed"]) * cfg.keep_consistency_penalty


def _keep_penalty(lengths: np.ndarray, cfg: HAEConfig) -> np.ndarray:
    """``[E]`` reward added to each KEEP turn of an episode of ``T`` turns.

    ``"normalized"``: ``keep_penalty / T`` (none when ``T <= 1``); ``"fixed"``: ``keep_penalty``.
    """
    if cfg.keep_penalty_mode == "fixed":
        return np.full(len(lengths), cfg.keep_penalty)
    return np.where(lengths > 1, cfg.keep_penalty / np.maximum(lengths, 1), 0.0)


class _RunningStats:
    """Count, mean and population std over blocks (Chan et al.'s parallel combination)."""

    def __init__(self) -> None:
        self.count, self.mean, self.m2 = 0, 0.0, 0.0

    def add(self, x: np.ndarray, members: np.ndarray) -> None:
        values = x[members]
        if values.size == 0:
            return
        block_mean = values.mean()
        deviation = values - block_mean
        total = self.count + values.size
        delta = block_mean - self.mean
        self.mean += delta * values.size / total
        self.m2 += float(deviation @ deviation) + delta * delta * self.count * values.size / total
        self.count = total

    @property
    def std(self) -> float:
        return math.sqrt(self.m2 / self.count)

    def standardize(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """``(x - mean) / (std + 1e-8)`` on every value (population std over the added members).

        As in the released code, no members leaves ``x`` unchanged (copied), and a set of one
        maps its member to 0.
        """
        out = np.empty_like(x) if out is None else out
        if not self.count:
            np.copyto(out, x)
            return out
        np.subtract(x, self.mean, out=out)
        out /= self.std + NORM_EPS
        return out


def _then(block: np.ndarray, later: Any) -> np.ndarray:
    """The next turn's value for every row: rows 1.., then ``later`` after the last row.

    ``later`` is the carried next turn of a block (``[E]``) or a fill value.
    """
    out = np.empty_like(block)
    out[:-1] = block[1:]
    out[-1] = later
    return out


def _reverse_scan(increment: np.ndarray, carry: np.ndarray, init: Any = 0.0) -> np.ndarray:
    """``out[t] = increment[t] + carry[t] * out[t + 1]`` along axis 0, with ``out[T] = init``.

    The module's only loop: over turn positions, each step vectorised over all episodes (and
    over stacked recursions).
    """
    out = np.empty((increment.shape[0] + 1, *increment.shape[1:]))
    out[-1] = init
    later = out[-1]
    for inc, mult, now in zip(increment[::-1], carry[::-1], out[-2::-1], strict=True):
        np.multiply(mult, later, out=now)
        now += inc
        later = now
    return out[:-1]


# ----------------------------------------------------------------------------------------------
# Row layout and input validation
# ----------------------------------------------------------------------------------------------


@dataclass
class _Grid:
    """Maps flat input rows to cells of the time-major ``[T, E]`` grid and back.

    Grid row t holds turn t of every episode, so the next turn is the next grid row.
    """

    cell: np.ndarray
    """Flat grid index ``rank * E + column`` of every input row (rank: turn order in episode)."""
    cell_row: np.ndarray
    """Inverse of ``cell``: the input row of every grid cell, ``n_rows`` for an empty cell."""
    lengths: np.ndarray
    """Turns per grid column (episode), ``[E]``; compact integer ids may leave empty columns."""
    keys: np.ndarray
    """Episode key of each grid column (for error messages)."""

    @property
    def n_rows(self) -> int:
        return len(self.cell)

    @property
    def n_episodes(self) -> int:
        return len(self.lengths)

    @property
    def live(self) -> np.ndarray:
        """``[T, E]``: the cell holds a turn."""
        return np.arange(self.cell_row.size // self.n_episodes)[:, None] < self.lengths

    @classmethod
    def build(cls, episode_id: Any, turn_index: Any) -> _Grid:
        keys = _to_numpy(episode_id)
        if keys.ndim != 1 or len(keys) == 0:
            raise ValueError(f"episode_id must be a non-empty 1-D sequence, got shape {keys.shape}")
        n_rows = len(keys)
        turns = _as_turn_index(turn_index, n_rows)
        column, column_keys = _episode_columns(keys)
        n_columns = len(column_keys)
        lengths = np.bincount(column, minlength=n_columns)
        # Fast path: turn indices already run 0..len-1 in every episode, so they are the ranks
        # (duplicates then collide in the grid and are caught below). Otherwise sort.
        if turns.min() >= 0 and (turns < lengths[column]).all():
            rank = turns
        else:
            rank = _turn_ranks(column, turns, lengths, column_keys)
        cell = rank * n_columns + column
        cell_row = np.full(int(lengths.max()) * n_columns, n_rows, dtype=np.int64)
        cell_row[cell] = np.arange(n_rows)
        if np.count_nonzero(cell_row < n_rows) != n_rows:
            repeated = int(np.argmax(np.bincount(cell) > 1))
            row = int(np.flatnonzero(cell == repeated)[0])
            raise ValueError(
                f"duplicate (episode_id, turn_index) pair ({_plain(keys[row])!r}, "
                f"{int(turns[row])}); de-duplicate repeated or padded turns first"
            )
        return cls(cell, cell_row, lengths, column_keys)

    def pad(self, rows: np.ndarray, fill: Any) -> np.ndarray:
        """Scatter ``[N]`` rows (input order) onto the whole grid; empty cells get ``fill``."""
        out = np.full(self.cell_row.size, fill, dtype=rows.dtype)
        out[self.cell] = rows
        return out.reshape(-1, self.n_episodes)

    def unpad(self, cells: np.ndarray) -> np.ndarray:
        """Gather the whole grid back to ``[N]`` rows in input order."""
        return np.take(cells.reshape(-1), self.cell)

    def previous_row(self) -> tuple[np.ndarray, np.ndarray]:
        """Each row's previous turn: its input row (the row itself for a first turn) and a flag."""
        has_previous = self.cell >= self.n_episodes
        earlier = self.cell_row[np.where(has_previous, self.cell - self.n_episodes, self.cell)]
        return earlier, has_previous

    def reverse_blocks(self, max_cells: int) -> list[tuple[int, int]]:
        """Turn ranges ``[first, stop)`` of about ``max_cells`` cells, the last turns first."""
        n_turns = self.cell_row.size // self.n_episodes
        per_block = max(1, max_cells // self.n_episodes)
        stops = range(n_turns, 0, -per_block)
        return [(max(0, stop - per_block), stop) for stop in stops]

    def block_rows(self, first: int, stop: int) -> np.ndarray:
        """Input row of every cell of turns ``[first, stop)`` (``n_rows`` when empty)."""
        return self.cell_row[first * self.n_episodes : stop * self.n_episodes]

    def gather(self, rows_array: np.ndarray, block_rows: np.ndarray) -> np.ndarray:
        """``[k, E]`` block of a per-row array; empty cells get a finite filler (a real row)."""
        return np.take(rows_array, block_rows, mode="clip").reshape(-1, self.n_episodes)

    def last_segment_start_value(self, v_high: np.ndarray, switch: np.ndarray) -> np.ndarray:
        """``[E]``: ``v_high`` at each episode's last segment start (truncation bootstrap)."""
        starts = np.zeros(self.cell_row.size, dtype=bool)
        starts[self.cell[switch | (self.cell < self.n_episodes)]] = True
        from_the_end = np.argmax(starts.reshape(-1, self.n_episodes)[::-1], axis=0)
        last_start = len(starts) // self.n_episodes - 1 - from_the_end
        start_rows = self.cell_row[last_start * self.n_episodes + np.arange(self.n_episodes)]
        return np.take(v_high, start_rows, mode="clip")

    def check_done_only_at_end(self, done: np.ndarray) -> None:
        """Raise if a row (input order) is done but its episode has later turns."""
        rank, column = np.divmod(self.cell, self.n_episodes)
        early = done & (rank < self.lengths[column] - 1)
        if early.any():
            row = int(np.argmax(early))
            raise ValueError(
                f"episode {_plain(self.keys[column[row]])!r} is done at its turn #{rank[row]} but "
                f"has later turns; keep only the active turns (up to and including the first done)"
            )


def _episode_columns(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Grid column of every row, and the key of every column.

    Compact integer ids map to ``id - min`` directly (ids that do not occur leave empty
    columns); anything else goes through ``np.unique``, which sorts (slow for strings).
    """
    if keys.dtype.kind in "iub":
        ids = keys.astype(np.int64, copy=False)
        low, high = int(ids.min()), int(ids.max())
        if high - low < 2 * len(ids) + 64:
            return ids - low, np.arange(low, high + 1)
    try:
        column_keys, column = np.unique(keys, return_inverse=True)
    except TypeError as err:
        raise ValueError(f"episode_id values must be mutually comparable: {err}") from err
    return column.reshape(-1), column_keys


def _turn_ranks(
    column: np.ndarray, turns: np.ndarray, lengths: np.ndarray, column_keys: np.ndarray
) -> np.ndarray:
    """Rank of every row's turn index within its episode (general path: gaps, any start)."""
    low, span = int(turns.min()), int(turns.max()) - int(turns.min()) + 1
    if len(lengths) * span < 2**62:
        order = np.argsort(column * span + (turns - low))
    else:
        order = np.lexsort((turns, column))
    sorted_column, sorted_turns = column[order], turns[order]
    repeated = (sorted_column[1:] == sorted_column[:-1]) & (sorted_turns[1:] == sorted_turns[:-1])
    if repeated.any():
        k = int(np.argmax(repeated))
        raise ValueError(
            f"duplicate (episode_id, turn_index) pair ({_plain(column_keys[sorted_column[k]])!r}, "
            f"{int(sorted_turns[k])}); de-duplicate repeated or padded turns first"
        )
    first_row = np.cumsum(lengths) - lengths
    rank = np.empty(len(turns), dtype=np.int64)
    rank[order] = np.arange(len(turns)) - first_row[sorted_column]
    return rank


def _plain(x: Any) -> Any:
    """A numpy scalar as the Python value it holds (for readable error messages)."""
    return x.item() if isinstance(x, np.generic) else x


def _to_numpy(x: Any) -> np.ndarray:
    if torch is not None and isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _first_tensor(*candidates: Any) -> Any:
    if torch is None:  # pragma: no cover
        return None
    return next((x for x in candidates if isinstance(x, torch.Tensor)), None)


def _float_dtype(like: Any) -> Any:
    return like.dtype if like.dtype.is_floating_point else torch.float32


def _checked_1d(x: Any, name: str, n_rows: int) -> np.ndarray:
    if x is None:
        raise ValueError(f"{name} is required")
    array = _to_numpy(x)
    if array.ndim != 1 or len(array) != n_rows:
        raise ValueError(f"{name} must have shape [{n_rows}] like episode_id, got {array.shape}")
    return array


def _as_float(x: Any, name: str, n_rows: int) -> np.ndarray:
    array = _checked_1d(x, name, n_rows)
    try:
        array = array.astype(np.float64, copy=False)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be numeric: {err}") from err
    if not np.isfinite(array).all():
        bad_rows = np.flatnonzero(~np.isfinite(array))[:5].tolist()
        raise ValueError(f"{name} has NaN or infinite values (rows {bad_rows}...)")
    return array


def _as_probability(x: Any, n_rows: int) -> np.ndarray:
    if x is None:
        raise ValueError("switch_advantage='paper' needs beta, the policy's SWITCH probability")
    array = _as_float(x, "beta", n_rows)
    if ((array < 0.0) | (array > 1.0)).any():
        raise ValueError("beta must be a probability in [0, 1]")
    return array


def _as_bool(x: Any, name: str, n_rows: int) -> np.ndarray:
    array = _checked_1d(x, name, n_rows)
    if array.dtype == np.bool_:
        return array
    numeric = _as_float(array, name, n_rows)
    if not ((numeric == 0.0) | (numeric == 1.0)).all():
        raise ValueError(f"{name} must hold booleans (or 0/1)")
    return numeric.astype(bool)


def _as_turn_index(x: Any, n_rows: int) -> np.ndarray:
    array = _checked_1d(x, "turn_index", n_rows)
    if array.dtype.kind in "iu":
        return array.astype(np.int64, copy=False)
    numeric = _as_float(array, "turn_index", n_rows)
    if not (numeric == np.round(numeric)).all():
        raise ValueError("turn_index must hold integers")
    return numeric.astype(np.int64)


def _as_spans(x: Any, n_rows: int) -> np.ndarray:
    """Object array of subgoal spans (str or None)."""
    if x is None or isinstance(x, str) or len(x) != n_rows:
        raise ValueError(f"subgoal_span must be a sequence of {n_rows} str-or-None values")
    if isinstance(x, np.ndarray) and x.dtype == object and x.ndim == 1:
        return x
    spans = np.empty(n_rows, dtype=object)
    spans[:] = list(x)
    return spans
