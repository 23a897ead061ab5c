"""Run outputs of a learner: ``metrics.csv``, ``eval.csv``, TensorBoard events, a curve PNG.

Everything goes under the run directory. ``metrics.csv`` has one row per iteration, with a fixed
header written once; ``eval.csv`` one row per evaluation, decoding mode and task type. A resumed
run appends to both (rows past the resumed iteration are dropped first, so a run interrupted
after its last checkpoint does not leave duplicate iterations).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

METRICS_FILE = "metrics.csv"
EVAL_FILE = "eval.csv"
#: ``eval.csv``: one row per evaluation, decoding mode and task type (``all`` for overall).
EVAL_COLUMNS = [
    "iteration",
    "episodes",
    "env_steps",
    "split",
    "mode",
    "task_type",
    "success",
    "low",
    "high",
    "n",
    "score",
]
CURVE_FILE = "learning_curve.png"
SMOOTHING = 5


class RunLogger:
    """Writes per-iteration scalars to ``metrics.csv`` and TensorBoard.

    Args:
        run_dir: The run directory (created).
        columns: CSV columns, in order; ``iteration`` first.
        resume_after: On resume, the last iteration whose row is kept.
        tensorboard: Also write TensorBoard events under ``run_dir/tensorboard``.
    """

    def __init__(
        self,
        run_dir: Path,
        columns: Sequence[str],
        *,
        resume_after: int | None = None,
        tensorboard: bool = True,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.columns = list(columns)
        self.path = self.run_dir / METRICS_FILE
        self.eval_path = self.run_dir / EVAL_FILE
        for path, columns in ((self.path, self.columns), (self.eval_path, EVAL_COLUMNS)):
            kept = []
            if resume_after is not None and path.exists():
                kept = [row for row in read_metrics(path) if int(row["iteration"]) <= resume_after]
            _write_rows(path, columns, kept)
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.run_dir / "tensorboard"))

    def log(self, iteration: int, metrics: Mapping[str, float]) -> None:
        """Append one iteration's metrics (missing columns are left empty)."""
        row = {"iteration": iteration, **metrics}
        with self.path.open("a", newline="") as handle:
            csv.DictWriter(handle, fieldnames=self.columns, extrasaction="ignore").writerow(row)
        if self.writer is not None:
            for key, value in metrics.items():
                if isinstance(value, int | float) and math.isfinite(value):
                    self.writer.add_scalar(key, value, iteration)
            self.writer.flush()

    def log_evaluation(self, position: Mapping[str, object], summary: Mapping[str, Any]) -> None:
        """Append one evaluation to ``eval.csv`` (overall and per task type).

        Args:
            position: ``iteration``, ``episodes``, ``env_steps``, ``split`` and ``mode``.
            summary: What :func:`~hiper_gym.agents.evaluate.summarize` returns.
        """
        blocks = [("all", summary), *summary["per_task"].items()]
        rows = [
            {
                **position,
                "task_type": task,
                "success": block["success"],
                "low": block["interval"][0],
                "high": block["interval"][1],
                "n": block["episodes"],
                "score": block.get("score"),
            }
            for task, block in blocks
        ]
        with self.eval_path.open("a", newline="") as handle:
            csv.DictWriter(handle, fieldnames=EVAL_COLUMNS, extrasaction="ignore").writerows(rows)
        if self.writer is not None:
            prefix = f"eval_{position['split']}_{position['mode']}"
            for task, block in blocks:
                self.writer.add_scalar(
                    f"{prefix}/{task}", block["success"], int(position["iteration"])
                )
            self.writer.flush()

    def close(self) -> None:
        """Flush and close TensorBoard."""
        if self.writer is not None:
            self.writer.close()


class QuietLogger:
    """A :class:`RunLogger` that writes nothing: the logger of every rank but rank 0."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)

    def log(self, iteration: int, metrics: Mapping[str, float]) -> None:
        """Write nothing."""

    def log_evaluation(self, position: Mapping[str, object], summary: Mapping[str, Any]) -> None:
        """Write nothing."""

    def close(self) -> None:
        """Nothing to close."""


def _write_rows(path: Path, columns: Sequence[str], rows: Sequence[Mapping[str, object]]) -> None:
    """Write ``path`` anew: the header, then ``rows``."""
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def read_metrics(path: Path) -> list[dict[str, str]]:
    """The rows of a ``metrics.csv``."""
    with Path(path).open(newline="") as handle:
        return list(csv.DictReader(handle))


def plot_learning_curve(
    metrics_path: Path,
    output: Path,
    *,
    columns: Sequence[str] = ("train/success", "eval/success"),
    title: str = "HiPER",
    x_column: str = "iteration",
) -> Path:
    """Plot success against iterations (or ``x_column``) from one or more ``metrics.csv``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(metrics_path)
    figure, axis = plt.subplots(figsize=(6, 4))
    for column in columns:
        points = [
            (float(row[x_column]), float(row[column]))
            for row in rows
            if row.get(column) not in (None, "")
        ]
        if points:
            xs, ys = zip(*points, strict=True)
            line = axis.plot(xs, ys, marker=".", alpha=0.45, label=column)[0]
            if len(ys) >= 2 * SMOOTHING:  # a moving average makes a noisy curve readable
                smooth = [
                    sum(ys[max(0, i - SMOOTHING + 1) : i + 1])
                    / len(ys[max(0, i - SMOOTHING + 1) : i + 1])
                    for i in range(len(ys))
                ]
                axis.plot(
                    xs, smooth, color=line.get_color(), label=f"{column} ({SMOOTHING}-it mean)"
                )
    axis.set_xlabel(x_column)
    axis.set_ylabel("success rate")
    axis.set_ylim(-0.02, 1.02)
    axis.grid(alpha=0.3)
    axis.legend()
    axis.set_title(title)
    figure.tight_layout()
    figure.savefig(output, dpi=110)
    plt.close(figure)
    return Path(output)
