"""``hiper-gym benchmark``: run algorithms over seeds, then compare them on held-out games.

A *spec* names the runs (an algorithm, a preset and extra flags each), the seeds, the env, the
base model, the budget and the evaluation split. Every (run, seed) pair is one ``hiper-gym
train`` subprocess writing ``<output-dir>/runs/<run>__seed<seed>/``; the benchmark starts them one
after another (or ``--jobs N`` at once, each with ``--threads 1``), skips the finished ones
(``final_eval.json`` exists), resumes the killed ones (``checkpoints/latest`` without
``final_eval.json``), and then writes into ``<output-dir>``:

* ``results.csv``: one row per held-out evaluation of every run (iteration, env steps, wall time,
  success overall with its 95% Wilson interval, and per task type), read from each run's
  ``eval.csv``;
* ``summary.md``: per run of the spec, over seeds, of the final held-out success: mean, std and a
  95% t-interval, the interquartile mean (IQM) and the mean with 95% stratified-bootstrap
  intervals, the same per task type, and the env steps and iterations needed to first reach each
  success level;
* ``curves.png``: held-out success against env steps, the mean over seeds with a 95% band.

Spec file (YAML; every key but ``runs`` optional, flags on the command line override it)::

    env_id: HiPER-ALFWorld-v0
    model: runs/sft/model       # the base policy every run starts from (default: the preset's)
    seeds: [1, 2, 3]
    env_steps: 179200           # or iterations: 140 (at most one)
    eval_split: valid_unseen
    eval_every: 10
    flags: [--eval-episodes, 48]          # added to every run
    runs:
      - {name: hiper, algorithm: hiper}   # preset: tiny-cpu by default
      - {name: ppo-flat, algorithm: ppo, flags: [--response-format, flat]}

**Env-step budgets.** ``env_steps: B`` becomes ``ceil(B / (num_envs * max_turns))`` iterations for
each run, from its preset and flags: ``num_envs * max_turns`` is the most turns one iteration can
take, so no run exceeds the budget and runs with the same batch shape get the same number of
episodes. The env steps the runs actually took (fewer: won episodes end early) are what
``results.csv``, the curves and the sample-efficiency table report. Stopping each run when its
``metrics.csv`` passes the budget would need the trainer to stop between iterations and still run
its final evaluation; a signal cannot ask for that today.

**Statistics.** ``rliable``'s two estimators (Agarwal et al., 2021), written here with numpy: the
IQM of the (seed x task type) matrix of final success (``scipy.stats.trim_mean(x, 0.25)`` over all
cells) and its percentile interval from a stratified bootstrap that resamples seeds with
replacement within each task type (``rliable.library.StratifiedBootstrap``; 50,000 draws). The
library itself is not used: it pins its bootstrap to ``arch``, whose current release fails to
import under pandas 3, and pulls scipy, pandas, statsmodels and seaborn (about 300 MB) into the
environment for twenty lines of arithmetic.

Ctrl-C (or SIGTERM) stops the running trainings cleanly: each gets one SIGINT, checkpoints its last
completed iteration and exits 130; a second Ctrl-C kills them (they then resume from their last
periodic checkpoint). Running the same command again resumes them.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import tyro
import yaml

from hiper_gym.agents.run_logger import read_metrics

RESULTS_FILE = "results.csv"
SUMMARY_FILE = "summary.md"
CURVES_FILE = "curves.png"
EVAL_FILE = "eval.csv"
FINAL_EVAL_FILE = "final_eval.json"  # the trainer's name (trainer.FINAL_EVAL_FILE)
DEFAULT_LEVELS = (0.5, 0.7, 0.8)
BOOTSTRAP_REPS = 50_000  # rliable's default
POLL_SECONDS = 1.0
STOP_GRACE_SECONDS = 600.0  # a stopping trainer saves a checkpoint; a big model takes a while
#: Flags the benchmark sets on every training itself.
RESERVED_FLAGS = (
    "--seed",
    "--output-dir",
    "--run-name",
    "--resume",
    "--num-iterations",
    "--progress",
    "--no-progress",
)
#: 97.5% quantiles of Student's t with 1..30 degrees of freedom (two-sided 95% intervals).
T_975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


class SpecError(ValueError):
    """A problem with the spec or the flags, reported before any training starts."""


# ---------------------------------------------------------------------------------------------
# The spec
# ---------------------------------------------------------------------------------------------


@dataclass
class RunSpec:
    """One row of the comparison: an algorithm with its preset and flags, trained once per seed."""

    name: str
    """the row's name (the run directories are ``<name>__seed<seed>``)"""
    algorithm: str
    """``hiper``, ``ppo``, ``grpo``, ``rloo`` or ``gigpo``"""
    preset: str = "tiny-cpu"
    """the algorithm's preset"""
    flags: list[str] = field(default_factory=list)
    """extra ``hiper-gym train`` flags of this row (after the spec's common flags)"""
    model: str | None = None
    """this row's base model, if it differs from the spec's (e.g. one per response format)"""


@dataclass
class BenchmarkSpec:
    """What to run: rows, seeds, env, base model, budget and evaluation."""

    runs: list[RunSpec]
    """the rows of the comparison"""
    seeds: list[int] = field(default_factory=lambda: [1, 2, 3])
    """every row is trained once per seed"""
    env_id: str | None = None
    """the env (default: the preset's)"""
    data_dir: str | None = None
    """the env's real data tree (``hiper-gym train --data-dir``; default: the embedded games)"""
    model: str | None = None
    """the base model every row starts from, e.g. an SFT model directory (default: the preset's)"""
    iterations: int | None = None
    """budget in training iterations"""
    env_steps: int | None = None
    """budget in env steps (turns), turned into iterations (see the module docstring)"""
    eval_split: str | None = None
    """the held-out split evaluated during and after training (default: the trainer's)"""
    eval_every: int | None = None
    """evaluate every this many iterations (default: the preset's)"""
    flags: list[str] = field(default_factory=list)
    """``hiper-gym train`` flags added to every row"""


def as_flags(value: Any, where: str) -> list[str]:
    """Flags from YAML: a list (numbers allowed) or one shell-quoted string."""
    if value is None:
        return []
    if isinstance(value, str):
        return shlex.split(value)
    if isinstance(value, list) and all(isinstance(item, str | int | float) for item in value):
        return [str(item) for item in value]
    raise SpecError(f"{where}: flags must be a list of strings or one string, got {value!r}")


def from_mapping(cls: type, data: Any, where: str) -> dict[str, Any]:
    """Check a YAML mapping's keys against a spec dataclass; returns the mapping."""
    if not isinstance(data, dict):
        raise SpecError(f"{where}: expected a mapping, got {data!r}")
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise SpecError(f"{where}: unknown keys {unknown}; known: {', '.join(known)}")
    return dict(data)


def run_spec_from(data: Any, index: int) -> RunSpec:
    """A :class:`RunSpec` from one entry of the spec's ``runs``."""
    where = f"runs[{index}]"
    entry = from_mapping(RunSpec, data, where)
    if "algorithm" not in entry:
        raise SpecError(f"{where}: needs an algorithm")
    entry["flags"] = as_flags(entry.get("flags"), where)
    entry.setdefault("name", entry["algorithm"])
    entry = {key: value if key == "flags" else _scalar(value, key) for key, value in entry.items()}
    return RunSpec(**entry)


def _scalar(value: Any, key: str) -> Any:
    if value is not None and not isinstance(value, str | int):
        raise SpecError(f"{key}: expected a string, got {value!r}")
    return None if value is None else str(value)


def load_spec(path: str | os.PathLike[str]) -> BenchmarkSpec:
    """Read a YAML spec (see the module docstring); :class:`SpecError` on any problem."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as error:
        raise SpecError(f"--spec {path}: {error}") from error
    entry = from_mapping(BenchmarkSpec, data, str(path))
    if not isinstance(entry.get("runs"), list) or not entry["runs"]:
        raise SpecError(f"{path}: `runs` must be a non-empty list")
    entry["runs"] = [run_spec_from(run, index) for index, run in enumerate(entry["runs"])]
    entry["flags"] = as_flags(entry.get("flags"), f"{path}: flags")
    seeds = entry.get("seeds", [1, 2, 3])
    if not isinstance(seeds, list) or not all(isinstance(seed, int) for seed in seeds):
        raise SpecError(f"{path}: seeds must be a list of integers, got {seeds!r}")
    for key in ("iterations", "env_steps", "eval_every"):
        if entry.get(key) is not None and not isinstance(entry[key], int):
            raise SpecError(f"{path}: {key} must be an integer, got {entry[key]!r}")
    return BenchmarkSpec(**entry)


def check_spec(spec: BenchmarkSpec) -> None:
    """Values the harness relies on: names, seeds, one budget, no reserved flags."""
    names = [run.name for run in spec.runs]
    for name in names:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
            raise SpecError(f"run name {name!r}: use letters, digits, '.', '_' and '-'")
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise SpecError(f"run names must be unique; repeated: {', '.join(duplicates)}")
    if (
        not spec.seeds
        or any(seed < 0 for seed in spec.seeds)
        or len(set(spec.seeds)) < len(spec.seeds)
    ):
        raise SpecError(f"seeds must be distinct integers >= 0, got {spec.seeds}")
    if spec.iterations is not None and spec.env_steps is not None:
        raise SpecError("give one budget: iterations or env_steps, not both")
    for key in ("iterations", "env_steps", "eval_every"):
        value = getattr(spec, key)
        if value is not None and value < (0 if key == "eval_every" else 1):
            raise SpecError(f"{key} must be >= {0 if key == 'eval_every' else 1}, got {value}")
    for where, flags in [("flags", spec.flags)] + [
        (f"{r.name}: flags", r.flags) for r in spec.runs
    ]:
        taken = [f for f in flags if f.split("=")[0] in RESERVED_FLAGS]
        if taken:
            raise SpecError(f"{where}: {', '.join(taken)} are set by the benchmark itself")


# ---------------------------------------------------------------------------------------------
# Planning: one training command per (run, seed)
# ---------------------------------------------------------------------------------------------


@dataclass
class PlannedRun:
    """One training of the benchmark: a row of the spec at one seed."""

    run: RunSpec
    seed: int
    directory: Path
    iterations: int
    argv: list[str]
    """``hiper-gym train`` arguments of a fresh start"""
    tensorboard: bool = True

    @property
    def key(self) -> str:
        """``<name>__seed<seed>``: the run directory's name."""
        return self.directory.name


def run_state(directory: Path) -> Literal["done", "resume", "new"]:
    """``done`` (final evaluation written), ``resume`` (a checkpoint, killed) or ``new``."""
    if (directory / FINAL_EVAL_FILE).is_file():
        return "done"
    if (directory / "checkpoints" / "latest").is_file():
        return "resume"
    return "new"


def common_flags(spec: BenchmarkSpec, run: RunSpec, jobs: int) -> list[str]:
    """The flags a row's trainings share, in override order: spec fields, spec flags, row flags."""
    flags: list[str] = []
    for option, value in (
        ("--env-id", spec.env_id),
        ("--data-dir", spec.data_dir),
        ("--model", run.model or spec.model),
        ("--eval-split", spec.eval_split),
        ("--eval-every", spec.eval_every),
    ):
        if value is not None:
            flags += [option, str(value)]
    if jobs > 1:  # N trainings share the cores; each row's flags may still say otherwise
        flags += ["--threads", "1"]
    return flags + spec.flags + run.flags


def resolve_train_args(run: RunSpec, flags: Sequence[str]) -> Any:
    """The trainer's settings for ``run`` (preset + flags), validated like ``hiper-gym train``."""
    from hiper_gym.agents import trainer

    try:
        algorithm_class = trainer.load_algorithm(run.algorithm)
    except ValueError as error:
        raise SpecError(f"{run.name}: {error}") from error
    if run.preset not in algorithm_class.presets:
        known = ", ".join(algorithm_class.presets)
        raise SpecError(
            f"{run.name}: {run.algorithm} has no preset {run.preset!r} (known: {known})"
        )
    try:
        args = trainer.parse_args(algorithm_class, [run.preset, *flags])
    except SystemExit as error:  # tyro printed the reason
        raise SpecError(
            f"{run.name}: `hiper-gym train {run.algorithm}` rejects its flags"
        ) from error
    problems = trainer.validate(algorithm_class(args))
    if problems:
        raise SpecError(f"{run.name}: " + "; ".join(problems))
    return args


def budget_iterations(spec: BenchmarkSpec, args: Any) -> int:
    """Iterations of one training: the spec's, from its env-step budget, or the preset's."""
    if spec.iterations is not None:
        return spec.iterations
    if spec.env_steps is not None:  # the most turns an iteration can take (see the docstring)
        return max(1, math.ceil(spec.env_steps / (args.num_envs * args.max_turns)))
    return int(args.num_iterations)


def plan_runs(spec: BenchmarkSpec, output_dir: Path, jobs: int = 1) -> list[PlannedRun]:
    """Every (row, seed) training with its command; checks every row's flags first."""
    planned = []
    for run in spec.runs:
        flags = common_flags(spec, run, jobs)
        args = resolve_train_args(run, flags)
        iterations = budget_iterations(spec, args)
        for seed in spec.seeds:
            directory = output_dir / "runs" / f"{run.name}__seed{seed}"
            argv = [run.algorithm, run.preset, *flags, "--seed", str(seed)]
            argv += ["--output-dir", str(directory.parent), "--run-name", directory.name]
            argv += ["--num-iterations", str(iterations), "--no-progress"]
            planned.append(
                PlannedRun(run, seed, directory, iterations, argv, tensorboard=args.tensorboard)
            )
    return planned


def train_command(planned: PlannedRun, python: str = sys.executable) -> list[str]:
    """The subprocess command: a fresh start, or ``--resume`` of a killed run."""
    prefix = [python, "-m", "hiper_gym.cli", "train"]
    if run_state(planned.directory) != "resume":
        return prefix + planned.argv
    resume = [planned.run.algorithm, "--resume", str(planned.directory)]
    resume += ["--num-iterations", str(planned.iterations), "--no-progress"]
    return prefix + resume + ([] if planned.tensorboard else ["--no-tensorboard"])


# ---------------------------------------------------------------------------------------------
# Running the trainings
# ---------------------------------------------------------------------------------------------


@dataclass
class Job:
    """A planned training and what became of it."""

    planned: PlannedRun
    status: str = "queued"
    """``queued``, ``running``, ``done``, ``failed``, ``stopped`` or ``busy`` (its training,
    started by an earlier benchmark that was killed, still runs)"""
    process: subprocess.Popen[bytes] | None = None
    iteration: int = 0
    success: float | None = None
    """the latest held-out success (or training success before the first evaluation)"""
    held_out: bool = False
    """whether ``success`` is held-out"""
    resumed: bool = False
    started: float | None = None
    note: str = ""
    pid_path: Path | None = None

    def refresh(self) -> None:
        """Read the run's progress from its ``metrics.csv`` and ``eval.csv``."""
        rows = safe_rows(self.planned.directory / "metrics.csv")
        if rows:
            self.iteration = int(float(rows[-1]["iteration"]))
            self.success, self.held_out = number(rows[-1].get("train/success")), False
        points = only_if_present(safe_rows(self.planned.directory / EVAL_FILE), "mode", "sampled")
        overall = [row for row in points if row.get("task_type") == "all"]
        if overall:
            self.success, self.held_out = number(overall[-1].get("success")), True

    def success_text(self) -> str:
        """``0.625`` (held-out), ``0.625 train`` (before any evaluation) or ``-``."""
        rate = format_rate(self.success)
        return rate if self.held_out or rate == "-" else f"{rate} train"


def launch(command: Sequence[str], log_path: Path) -> subprocess.Popen[bytes]:
    """Start one training in its own process group, its output appended to ``log_path``.

    Its own group: a terminal's Ctrl-C reaches only the benchmark, which then sends exactly one
    SIGINT to each training (a second one, arriving before the trainer's checkpoint is under way,
    would cut it short).
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    # started as a background job, the benchmark ignores SIGINT, and so would its children: they
    # must still stop (and checkpoint) on the SIGINT the benchmark sends them
    ignored = signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    if ignored:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with log_path.open("ab") as log:
            log.write(f"\n=== {time.strftime('%F %T')} {shlex.join(command)}\n".encode())
            log.flush()
            return subprocess.Popen(
                list(command),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
    finally:
        if ignored:
            signal.signal(signal.SIGINT, signal.SIG_IGN)


def pid_file(job: Job, log_dir: Path) -> Path:
    """Where a running training's process id is kept (``logs/<run>.pid``)."""
    return log_dir / f"{job.planned.key}.pid"


def training_elsewhere(path: Path) -> int | None:
    """The pid in ``path`` if that training still runs (started by an earlier benchmark)."""
    try:
        pid = int(path.read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    cmdline = Path(f"/proc/{pid}/cmdline")  # a reused pid is another program
    if cmdline.exists() and b"hiper_gym" not in cmdline.read_bytes():
        return None
    return pid


def start_job(job: Job, python: str, log_dir: Path) -> None:
    """Launch a queued job (fresh or resumed) and note its pid."""
    job.resumed = run_state(job.planned.directory) == "resume"
    job.process = launch(train_command(job.planned, python), log_dir / f"{job.planned.key}.log")
    job.pid_path = pid_file(job, log_dir)
    job.pid_path.write_text(str(job.process.pid))
    job.status, job.started = "running", time.time()


def finish_job(job: Job, returncode: int) -> None:
    """Record a training's exit: done (final evaluation written), stopped (130) or failed."""
    if job.pid_path is not None:
        job.pid_path.unlink(missing_ok=True)
    job.refresh()
    if returncode == 0 and run_state(job.planned.directory) == "done":
        job.status = "done"
    elif returncode == 130:
        job.status = "stopped"
    else:
        job.status, job.note = "failed", f"exit {returncode}"


def run_jobs(jobs: list[Job], *, parallel: int, python: str, log_dir: Path, view: Any) -> None:
    """Run the queued jobs, ``parallel`` at a time, until all have exited.

    Raises:
        KeyboardInterrupt: After a Ctrl-C, once the running trainings have stopped.
    """
    queue = deque(job for job in jobs if job.status == "queued")
    running: list[Job] = []
    try:
        while queue or running:
            while queue and len(running) < parallel:
                job = queue.popleft()
                start_job(job, python, log_dir)
                running.append(job)
                view.event(job, "resumed" if job.resumed else "started")
            for job in list(running):
                assert job.process is not None
                returncode = job.process.poll()
                if returncode is None:
                    job.refresh()
                    continue
                finish_job(job, returncode)
                running.remove(job)
                view.event(job, job.status)
            view.update(jobs)
            if queue or running:
                time.sleep(POLL_SECONDS)
    except KeyboardInterrupt:
        stop_jobs(running, view)
        view.update(jobs)
        raise


def signal_group(job: Job, signum: int) -> None:
    """Send ``signum`` to a training's process group (it and its env workers)."""
    assert job.process is not None
    try:
        os.killpg(job.process.pid, signum)
    except ProcessLookupError:  # it has exited already
        pass


def stop_jobs(running: list[Job], view: Any) -> None:
    """One SIGINT to each running training, then wait; a second Ctrl-C kills them."""
    view.message(f"stopping {len(running)} training(s): each saves a checkpoint first")
    for job in running:
        signal_group(job, signal.SIGINT)
    deadline = time.time() + STOP_GRACE_SECONDS
    try:
        for job in running:
            assert job.process is not None
            finish_job(job, job.process.wait(timeout=max(deadline - time.time(), 0.1)))
            view.event(job, job.status)
    except (KeyboardInterrupt, subprocess.TimeoutExpired):
        view.message("killing the trainings (they resume from their last periodic checkpoint)")
        for job in running:
            if job.process is not None and job.process.poll() is None:
                signal_group(job, signal.SIGKILL)
                job.process.wait()
                job.status = "stopped"


# ---------------------------------------------------------------------------------------------
# Live view
# ---------------------------------------------------------------------------------------------


def status_counts(jobs: Sequence[Job]) -> str:
    """``2 done, 1 running, 3 queued``."""
    order = ("done", "running", "queued", "stopped", "failed", "busy")
    counts = {status: sum(job.status == status for job in jobs) for status in order}
    return ", ".join(f"{count} {status}" for status, count in counts.items() if count)


def iterations_done(jobs: Sequence[Job]) -> tuple[int, int]:
    """Iterations done and planned, over all jobs."""
    done = sum(min(job.iteration, job.planned.iterations) for job in jobs)
    return done, sum(job.planned.iterations for job in jobs)


class PlainView:
    """One line per event and per new iteration (``--no-progress``)."""

    def __init__(self) -> None:
        self.seen: dict[str, int] = {}

    def __enter__(self) -> PlainView:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def event(self, job: Job, what: str) -> None:
        """A job started, resumed, finished, failed or stopped."""
        note = f" ({job.note})" if job.note else ""
        print(f"[{job.planned.key}] {what}{note}", flush=True)

    def message(self, text: str) -> None:
        """A line for the user."""
        print(text, flush=True)

    def update(self, jobs: Sequence[Job]) -> None:
        """Print the running jobs that moved on."""
        for job in jobs:
            if job.status == "running" and job.iteration > self.seen.get(job.planned.key, 0):
                self.seen[job.planned.key] = job.iteration
                done, total = iterations_done(jobs)
                print(
                    f"[{job.planned.key}] iteration {job.iteration}/{job.planned.iterations} "
                    f"success {job.success_text()} | all runs {done}/{total} iterations",
                    flush=True,
                )


class RichView:
    """A live table of the runs and an overall progress bar (rich)."""

    def __enter__(self) -> RichView:
        from rich.live import Live
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(
            TextColumn("[bold]benchmark"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} iterations"),
            TimeElapsedColumn(),
            TextColumn("{task.description}"),
        )
        self.task = self.progress.add_task("", total=1)
        self.live = Live(refresh_per_second=2)
        self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.live.__exit__(None, None, None)

    def event(self, job: Job, what: str) -> None:
        """Failures are printed above the table; the rest shows in it."""
        if what == "failed":
            self.message(f"[{job.planned.key}] failed ({job.note}); see its log")

    def message(self, text: str) -> None:
        """A line above the live table."""
        self.live.console.print(text)

    def update(self, jobs: Sequence[Job]) -> None:
        """Redraw the table and the bar."""
        from rich.console import Group

        done, total = iterations_done(jobs)
        self.progress.update(
            self.task, completed=done, total=total, description=status_counts(jobs)
        )
        self.live.update(Group(jobs_table(jobs), self.progress))


def jobs_table(jobs: Sequence[Job]) -> Any:
    """A rich table: run, algorithm, seed, status, iteration/total, latest success."""
    from rich.table import Table

    colours = {
        "running": "cyan",
        "done": "green",
        "failed": "red",
        "stopped": "yellow",
        "busy": "magenta",
    }
    table = Table(title="hiper-gym benchmark", expand=False)
    for column in ("run", "algorithm", "seed", "status", "iteration", "success"):
        table.add_column(column, justify="right" if column in {"seed", "success"} else "left")
    for job in jobs:
        colour = colours.get(job.status, "white")
        status = job.status + (" (resumed)" if job.resumed and job.status == "running" else "")
        table.add_row(
            job.planned.run.name,
            job.planned.run.algorithm,
            str(job.planned.seed),
            f"[{colour}]{status}[/{colour}]",
            f"{job.iteration}/{job.planned.iterations}",
            job.success_text(),
        )
    return table


# ---------------------------------------------------------------------------------------------
# Reading the run directories
# ---------------------------------------------------------------------------------------------


@dataclass
class EvalPoint:
    """One held-out evaluation of a run."""

    iteration: int
    episodes: int
    env_steps: float
    wall_time: float
    success: float
    low: float
    high: float
    n: int
    per_task: dict[str, float] = field(default_factory=dict)
    score: float = math.nan
    """the env's own score (WebShop's task score; ALFWorld's equals success)"""


@dataclass
class RunResult:
    """A run's held-out evaluations; ``final`` is the last one of a finished run."""

    name: str
    algorithm: str
    seed: int
    finished: bool
    points: list[EvalPoint]
    train_games: float | None = None
    """success on the training games at the end, beside the held-out figure"""
    train_score: float | None = None
    """the env's score on the training games at the end"""
    behaviour: dict[str, float] = field(default_factory=dict)
    """training-rollout metrics (:data:`BEHAVIOUR_COLUMNS`), averaged over the last iterations"""

    @property
    def final(self) -> EvalPoint | None:
        """The final evaluation, once the run has finished."""
        return self.points[-1] if self.finished and self.points else None


#: ``metrics.csv`` columns of the summary's "training behaviour" table, and their headers: how the
#: policies act, to explain an ordering (does the hierarchy switch, how long are its segments).
BEHAVIOUR_COLUMNS = {
    "train/success": "training success",
    "train/episode_turns": "turns per episode",
    "train/switch_rate": "SWITCH rate",
    "train/segment_length": "turns per subgoal",
    "losses/entropy": "entropy",
    "losses/kl": "KL to base",
}
#: The last this many iterations of a run are averaged for the behaviour table.
BEHAVIOUR_ITERATIONS = 10


def number(value: Any) -> float:
    """A CSV cell as a float (NaN when empty or missing)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def safe_rows(path: Path) -> list[dict[str, str]]:
    """A CSV's rows, or none while it does not exist (or is being rewritten)."""
    try:
        return read_metrics(path)
    except (OSError, csv.Error):
        return []


def cumulative_elapsed(metrics: Sequence[Mapping[str, str]]) -> dict[int, float]:
    """Training wall time at each iteration, added up over resumes.

    ``time/elapsed`` restarts at 0 when a run resumes: where it drops, the time of the row before
    is added to what follows.
    """
    offset, previous, elapsed = 0.0, 0.0, {}
    for row in metrics:
        value = number(row.get("time/elapsed"))
        if math.isnan(value):
            continue
        if value < previous:
            offset += previous
        previous = value
        elapsed[int(float(row["iteration"]))] = offset + value
    return elapsed


def only_if_present(rows: list[dict[str, str]], column: str, value: str | None) -> list[dict]:
    """Rows whose ``column`` is ``value``, when the file has such rows (else all of them)."""
    if value is None or not any(row.get(column) == value for row in rows):
        return rows
    return [row for row in rows if row.get(column) == value]


def points_from_eval_csv(rows: list[dict[str, str]], wall: Mapping[int, float]) -> list[EvalPoint]:
    """Group the long-format rows by iteration; a later row for the same cell wins."""
    cells: dict[int, dict[str, dict[str, str]]] = {}
    for row in rows:
        cells.setdefault(int(float(row["iteration"])), {})[row.get("task_type") or "all"] = row
    points = []
    for iteration in sorted(cells):
        tasks = cells[iteration]
        overall = tasks.get("all")
        if overall is None:
            continue
        points.append(
            EvalPoint(
                iteration=iteration,
                episodes=int(number(overall.get("episodes")) or 0),
                env_steps=number(overall.get("env_steps")),
                wall_time=wall.get(iteration, 0.0 if iteration == 0 else math.nan),
                success=number(overall.get("success")),
                low=number(overall.get("low")),
                high=number(overall.get("high")),
                n=int(number(overall.get("n")) or 0),
                per_task={t: number(r.get("success")) for t, r in tasks.items() if t != "all"},
                score=number(overall.get("score")),
            )
        )
    return points


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON file's object, or ``None`` if it is missing or unreadable."""
    import json

    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def read_run(planned: PlannedRun, split: str | None, mode: str) -> RunResult:
    """A run directory's held-out evaluations, from its ``eval.csv``."""
    directory = planned.directory
    metrics = safe_rows(directory / "metrics.csv")
    wall = cumulative_elapsed(metrics)
    final = read_json(directory / FINAL_EVAL_FILE)
    config = read_json(directory / "config.json") or {}
    split = config.get("eval_split", split)
    rows = safe_rows(directory / EVAL_FILE)
    rows = only_if_present(only_if_present(rows, "split", split), "mode", mode)
    points = points_from_eval_csv(rows, wall)
    if final is not None and points and math.isnan(points[-1].score):  # eval.csv before scores
        points[-1].score = number(final.get("score"))
    train_games = (final or {}).get("train_games") or {}
    return RunResult(
        name=planned.run.name,
        algorithm=planned.run.algorithm,
        seed=planned.seed,
        finished=final is not None,
        points=points,
        train_games=train_games.get("success"),
        train_score=train_games.get("score"),
        behaviour=recent_means(metrics, BEHAVIOUR_COLUMNS, BEHAVIOUR_ITERATIONS),
    )


def recent_means(
    metrics: Sequence[Mapping[str, str]], columns: Iterable[str], last: int
) -> dict[str, float]:
    """Each column's mean over the last ``last`` rows that have it (absent: not in the dict)."""
    means = {}
    for column in columns:
        values = [number(row.get(column)) for row in metrics]
        values = [value for value in values if not math.isnan(value)][-last:]
        if values:
            means[column] = float(np.mean(values))
    return means


# ---------------------------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------------------------


def t_quantile_975(df: int) -> float:
    """The 97.5% quantile of Student's t (a table to 30 degrees of freedom, then Cornish-Fisher).

    Example:
        >>> t_quantile_975(2), round(t_quantile_975(120), 3)
        (4.303, 1.98)
    """
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df <= len(T_975):
        return T_975[df - 1]
    z = 1.959964
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def clip_unit(bounds: tuple[float, float]) -> tuple[float, float]:
    """An interval of a success rate cut to ``[0, 1]`` (NaNs stay NaN)."""
    return tuple(float(np.clip(bound, 0.0, 1.0)) for bound in bounds)  # type: ignore[return-value]


def t_interval(values: Sequence[float]) -> tuple[float, float]:
    """95% t-interval of the mean of ``values`` (NaNs with fewer than two values).

    Example:
        >>> [round(bound, 3) for bound in t_interval([0.5, 0.7, 0.9])]
        [0.203, 1.197]
    """
    data = np.asarray(values, dtype=float)
    if data.size < 2:
        return math.nan, math.nan
    half = t_quantile_975(data.size - 1) * data.std(ddof=1) / math.sqrt(data.size)
    return float(data.mean() - half), float(data.mean() + half)


def iqm_rows(samples: np.ndarray) -> np.ndarray:
    """Interquartile mean of each row: ``scipy.stats.trim_mean(row, 0.25)``, as rliable's IQM.

    ``int(0.25 * n)`` values are cut from each end of the sorted row (none when n < 4).
    """
    ordered = np.sort(samples, axis=-1)
    cut = int(0.25 * ordered.shape[-1])
    return ordered[..., cut : ordered.shape[-1] - cut].mean(axis=-1)


def iqm(scores: np.ndarray | Sequence[float]) -> float:
    """Interquartile mean of all the scores (a runs x tasks matrix is flattened, as rliable)."""
    return float(iqm_rows(np.asarray(scores, dtype=float).reshape(1, -1))[0])


STATISTICS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "iqm": iqm_rows,
    "mean": lambda samples: samples.mean(axis=-1),
}


def stratified_bootstrap_ci(
    scores: np.ndarray,
    statistic: str = "iqm",
    *,
    reps: int = BOOTSTRAP_REPS,
    seed: int = 0,
) -> tuple[float, float]:
    """95% percentile interval of ``statistic`` from a stratified bootstrap (rliable's).

    Args:
        scores: ``[runs, tasks]``, one row per seed, one column per task type.
        statistic: ``iqm`` or ``mean``, of all the cells of a resampled matrix.
        reps: Bootstrap draws.
        seed: Seed of the draws (the intervals are reproducible).

    Each draw resamples the runs with replacement independently within every task (column), as
    ``rliable.library.StratifiedBootstrap`` does.
    """
    scores = np.asarray(scores, dtype=float)
    runs, tasks = scores.shape
    picks = np.random.default_rng(seed).integers(runs, size=(reps, runs, tasks))
    samples = scores[picks, np.arange(tasks)].reshape(reps, runs * tasks)
    low, high = np.percentile(STATISTICS[statistic](samples), [2.5, 97.5])
    return float(low), float(high)


def first_crossing(points: Sequence[EvalPoint], level: float) -> EvalPoint | None:
    """The first evaluation whose held-out success is at least ``level`` (``None``: never)."""
    return next((point for point in points if point.success >= level), None)


# ---------------------------------------------------------------------------------------------
# results.csv
# ---------------------------------------------------------------------------------------------


def task_types(results: Iterable[RunResult]) -> list[str]:
    """Every task type evaluated, sorted."""
    return sorted({task for result in results for p in result.points for task in p.per_task})


def write_results_csv(results: Sequence[RunResult], path: Path) -> Path:
    """One row per held-out evaluation of every run; ``final`` marks the final evaluation."""
    tasks = task_types(results)
    columns = ["run", "algorithm", "seed", "iteration", "episodes", "env_steps", "wall_time_s"]
    columns += ["final", "success", "low", "high", "n", "score"]
    columns += [f"success/{task}" for task in tasks]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for result in results:
            for point in result.points:
                row = [result.name, result.algorithm, result.seed, point.iteration, point.episodes]
                row += [cell(point.env_steps, 0), cell(point.wall_time, 1)]
                row += [int(point is result.final), cell(point.success), cell(point.low)]
                row += [cell(point.high), point.n, cell(point.score)]
                row += [cell(point.per_task.get(task, math.nan)) for task in tasks]
                writer.writerow(row)
    return path


def cell(value: float, digits: int = 4) -> str:
    """A CSV cell: rounded, empty for NaN."""
    return "" if value is None or math.isnan(value) else f"{value:.{digits}f}"


# ---------------------------------------------------------------------------------------------
# summary.md
# ---------------------------------------------------------------------------------------------


def format_rate(value: float | None) -> str:
    """``0.625``, or ``-`` when unknown."""
    return "-" if value is None or math.isnan(value) else f"{value:.3f}"


def format_interval(bounds: tuple[float, float]) -> str:
    """``[0.500, 0.750]``, or ``-`` when undefined."""
    if any(math.isnan(bound) for bound in bounds):
        return "-"
    return f"[{bounds[0]:.3f}, {bounds[1]:.3f}]"


def score_matrix(finals: Sequence[EvalPoint]) -> np.ndarray:
    """``[seeds, task types]`` of final success, over the task types every seed has.

    Without task types (or none in common) the matrix is one column of overall success.
    """
    tasks = [task for task in sorted(finals[0].per_task) if all(task in p.per_task for p in finals)]
    if not tasks:
        return np.array([[point.success] for point in finals])
    return np.array([[point.per_task.get(task, math.nan) for task in tasks] for point in finals])


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """A GitHub markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def groups(results: Sequence[RunResult]) -> dict[str, list[RunResult]]:
    """Results by row name, in spec order."""
    grouped: dict[str, list[RunResult]] = {}
    for result in results:
        grouped.setdefault(result.name, []).append(result)
    return grouped


def own_models_line(spec: BenchmarkSpec) -> list[str]:
    """The rows that start from their own base model, if any (one markdown line)."""
    own = [f"{run.name} `{run.model}`" for run in spec.runs if run.model]
    return ["", f"Rows with their own base model: {', '.join(own)}."] if own else []


def has_scores(results: Sequence[RunResult]) -> bool:
    """Some evaluation has a score that is not its success (WebShop's partial credit)."""
    return any(
        not math.isnan(point.score) and not math.isclose(point.score, point.success)
        for run in results
        for point in run.points
    )


def score_cells(runs: Sequence[RunResult]) -> list[str]:
    """Mean final held-out score and training-games score of a row's finished runs."""
    finals = [run.final.score for run in runs if run.final and not math.isnan(run.final.score)]
    train = [run.train_score for run in runs if run.final and run.train_score is not None]
    return [f"{np.mean(v):.3f}" if v else "-" for v in (finals, train)]


def overall_rows(results: Sequence[RunResult], reps: int, scores: bool = False) -> list[list[str]]:
    """Per row: seeds, mean, std, t-interval, IQM with its bootstrap interval, cost.

    ``scores`` adds the held-out and training-games scores (WebShop).
    """
    rows = []
    for name, runs in groups(results).items():
        finished = [run for run in runs if run.final is not None]
        finals = [run.final for run in finished if run.final is not None]
        values = [point.success for point in finals]
        count = f"{len(finals)}/{len(runs)}"
        if not finals:
            rows.append([name, runs[0].algorithm, count] + ["-"] * (10 if scores else 8))
            continue
        matrix = score_matrix(finals)
        train = [run.train_games for run in finished if run.train_games is not None]
        rows.append(
            [
                name,
                runs[0].algorithm,
                count,
                format_rate(float(np.mean(values))),
                format_rate(float(np.std(values, ddof=1))) if len(values) > 1 else "-",
                format_interval(clip_unit(t_interval(values))),
                format_rate(iqm(matrix)),
                format_interval(stratified_bootstrap_ci(matrix, "iqm", reps=reps))
                if len(finals) > 1
                else "-",
                format_rate(float(np.mean(train))) if train else "-",
                f"{np.mean([p.env_steps for p in finals]):,.0f}",
                f"{np.mean([p.wall_time for p in finals]) / 60:.1f}",
                *(score_cells(runs) if scores else []),
            ]
        )
    return rows


def per_task_rows(results: Sequence[RunResult], tasks: Sequence[str]) -> list[list[str]]:
    """Per row and task type: mean +- std over seeds of the final success."""
    rows = []
    for name, runs in groups(results).items():
        finals = [run.final for run in runs if run.final is not None]
        row = [name]
        for task in tasks:
            values = [
                p.per_task[task] for p in finals if not math.isnan(p.per_task.get(task, math.nan))
            ]
            std = f" ± {np.std(values, ddof=1):.2f}" if len(values) > 1 else ""
            row.append(f"{np.mean(values):.2f}{std}" if values else "-")
        rows.append(row)
    return rows


def behaviour_rows(results: Sequence[RunResult]) -> list[list[str]]:
    """Per row: the behaviour columns' mean over seeds (a flat row has no SWITCH to count)."""
    rows = []
    for name, runs in groups(results).items():
        row = [name]
        for column in BEHAVIOUR_COLUMNS:
            values = [run.behaviour[column] for run in runs if column in run.behaviour]
            row.append(f"{np.mean(values):.3g}" if values else "-")
        rows.append(row)
    return rows


def crossing_rows(results: Sequence[RunResult], levels: Sequence[float]) -> list[list[str]]:
    """Per row and level: seeds that reached it, mean env steps and iterations, per seed."""
    rows = []
    for name, runs in groups(results).items():
        for level in levels:
            hits = [(run.seed, first_crossing(run.points, level)) for run in runs]
            reached = [point for _, point in hits if point is not None]
            per_seed = "; ".join(
                f"s{seed}: {point.env_steps:,.0f} (it {point.iteration})"
                if point
                else f"s{seed}: -"
                for seed, point in hits
            )
            rows.append(
                [
                    name,
                    f"{level:.2f}",
                    f"{len(reached)}/{len(runs)}",
                    f"{np.mean([p.env_steps for p in reached]):,.0f}" if reached else "-",
                    f"{np.mean([p.iteration for p in reached]):.0f}" if reached else "-",
                    per_seed,
                ]
            )
    return rows


def efficiency_line(results: Sequence[RunResult], level: float) -> str:
    """One sentence: mean iterations (env steps) to first reach ``level``, per row."""
    parts = []
    for name, runs in groups(results).items():
        reached = [p for p in (first_crossing(run.points, level) for run in runs) if p]
        if reached:
            iterations = np.mean([p.iteration for p in reached])
            steps = np.mean([p.env_steps for p in reached])
            parts.append(
                f"{name} {iterations:.0f} ({steps:,.0f} steps, {len(reached)}/{len(runs)})"
            )
        else:
            parts.append(f"{name} not reached (0/{len(runs)})")
    return f"Iterations to first reach {level:.0%} held-out success: " + ", ".join(parts) + "."


def summary_markdown(
    results: Sequence[RunResult],
    spec: BenchmarkSpec,
    *,
    levels: Sequence[float] = DEFAULT_LEVELS,
    mode: str = "sampled",
    reps: int = BOOTSTRAP_REPS,
) -> str:
    """``summary.md``: the comparison table, per task type, sample efficiency, method notes."""
    tasks = task_types(results)
    budget = (
        f"{spec.iterations} iterations"
        if spec.iterations is not None
        else f"{spec.env_steps:,} env steps"
        if spec.env_steps is not None
        else "the presets' iterations"
    )
    lines = [
        "# Benchmark summary",
        "",
        f"env `{spec.env_id or 'preset default'}`, data `{spec.data_dir or 'embedded'}`, "
        f"base model `{spec.model or 'preset default'}`, "
        f"held-out split `{held_out_name(spec.eval_split, spec.env_id)}` ({mode} evaluations), "
        f"seeds {', '.join(map(str, spec.seeds))}, budget {budget}.",
        *own_models_line(spec),
        "",
        "## Final held-out success",
        "",
    ]
    header = ["run", "algorithm", "seeds", "mean", "std", "95% t-CI", "IQM", "IQM 95% CI"]
    header += ["train games", "env steps", "minutes"]
    scores = has_scores(results)
    header += ["score", "train score"] if scores else []
    lines += markdown_table(header, overall_rows(results, reps, scores))
    if tasks:
        lines += ["", "## Per task type (mean ± std over seeds)", ""]
        lines += markdown_table(["run", *tasks], per_task_rows(results, tasks))
    lines += ["", "## Sample efficiency", "", efficiency_line(results, max(levels)), ""]
    header = ["run", "level", "seeds reached", "env steps (mean)", "iterations (mean)", "per seed"]
    lines += markdown_table(header, crossing_rows(results, levels))
    if any(run.behaviour for run in results):
        lines += ["", f"## Training behaviour (last {BEHAVIOUR_ITERATIONS} iterations)", ""]
        lines += markdown_table(["run", *BEHAVIOUR_COLUMNS.values()], behaviour_rows(results))
    lines += ["", *METHOD_NOTES]
    return "\n".join(lines) + "\n"


METHOD_NOTES = [
    "## How these are computed",
    "",
    "- *mean, std, 95% t-CI*: over seeds, of each finished run's final held-out success "
    "(std with ddof=1; the t-interval needs two seeds and is clipped to [0, 1]).",
    "- *IQM*: interquartile mean of the (seed x task type) matrix of final success "
    "(`scipy.stats.trim_mean(x, 0.25)` over all cells, as `rliable`); task types weigh equally.",
    "- *IQM 95% CI*: percentile interval of a stratified bootstrap (seeds resampled with "
    "replacement within each task type), as `rliable`'s `StratifiedBootstrap`.",
    "- *train games*: the final success on the training games, beside the held-out figure.",
    "- *score, train score* (WebShop): the env's mean task score of the final evaluation "
    "(partial credit for attributes, options and price), held-out and on the training goals.",
    "- *Sample efficiency*: the first evaluation at or above the level; means are over the seeds "
    "that reached it; env steps are the turns the run actually played.",
    "- *Training behaviour*: `metrics.csv` of the training rollouts, the mean of the last "
    f"{BEHAVIOUR_ITERATIONS} iterations, then over seeds. SWITCH rate: the share of turns that "
    "start a subgoal (0 in the flat format, where a subgoal is the whole episode).",
]


# ---------------------------------------------------------------------------------------------
# curves.png
# ---------------------------------------------------------------------------------------------


def mean_curve(runs: Sequence[RunResult]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mean success over seeds against env steps, with a 95% t-band.

    The seeds evaluate at different env steps: each curve is interpolated onto the union of their
    evaluation points, over the range every seed covers.
    """
    curves = [
        (np.array([p.env_steps for p in run.points]), np.array([p.success for p in run.points]))
        for run in runs
        if run.points and not any(math.isnan(p.env_steps) for p in run.points)
    ]
    if not curves:
        empty = np.array([])
        return empty, empty, empty, empty
    start = max(xs[0] for xs, _ in curves)
    stop = min(xs[-1] for xs, _ in curves)
    grid = np.unique(np.concatenate([xs for xs, _ in curves]))
    grid = grid[(grid >= start) & (grid <= stop)]
    values = np.array([np.interp(grid, xs, ys) for xs, ys in curves])
    mean = values.mean(axis=0)
    bands = np.array([t_interval(column) for column in values.T]).reshape(-1, 2)
    return grid, mean, np.clip(bands[:, 0], 0, 1), np.clip(bands[:, 1], 0, 1)


def plot_curves(
    results: Sequence[RunResult], path: Path, levels: Sequence[float] = DEFAULT_LEVELS
) -> Path:
    """``curves.png``: held-out success against env steps, mean and 95% band per row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.5))
    for name, runs in groups(results).items():
        # the mean covers the finished runs (a run still going would cut it short)
        finished = [run for run in runs if run.finished] or runs
        grid, mean, low, high = mean_curve(finished)
        if grid.size == 0:
            continue
        line = axis.plot(grid, mean, label=f"{name} ({len(finished)} seeds)")[0]
        if not np.isnan(low).all():
            axis.fill_between(grid, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
        for run in runs:  # the seeds themselves, faint
            axis.plot(
                [p.env_steps for p in run.points],
                [p.success for p in run.points],
                color=line.get_color(),
                alpha=0.25,
                linewidth=0.8,
            )
    for level in levels:
        axis.axhline(level, color="grey", linestyle=":", linewidth=0.8)
    axis.set_xlabel("env steps (turns played in training)")
    axis.set_ylabel("held-out success")
    axis.set_ylim(-0.02, 1.02)
    axis.grid(alpha=0.3)
    if axis.get_legend_handles_labels()[0]:
        axis.legend(fontsize="small")
    axis.set_title("held-out success: mean over seeds, 95% t-band")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def write_report(
    planned: Sequence[PlannedRun],
    spec: BenchmarkSpec,
    output_dir: Path,
    *,
    levels: Sequence[float] = DEFAULT_LEVELS,
    mode: str = "sampled",
    reps: int = BOOTSTRAP_REPS,
) -> list[RunResult]:
    """Write ``results.csv``, ``summary.md`` and ``curves.png`` from the run directories."""
    results = [read_run(run, spec.eval_split, mode) for run in planned]
    write_results_csv(results, output_dir / RESULTS_FILE)
    summary = summary_markdown(results, spec, levels=levels, mode=mode, reps=reps)
    (output_dir / SUMMARY_FILE).write_text(summary)
    plot_curves(results, output_dir / CURVES_FILE, levels)
    return results


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


DESCRIPTION = """Run and compare algorithms over seeds on held-out games.

Each (row, seed) is one `hiper-gym train` run in OUTPUT_DIR/runs/<row>__seed<seed>: finished runs
are skipped, killed ones resumed; then results.csv, summary.md and curves.png are written.
Ctrl-C stops the trainings cleanly; the same command resumes them.

Spec (YAML): env_id, data_dir, model, seeds: [1, 2, 3], iterations: N or env_steps: N, eval_split,
eval_every, flags: [...], runs: [{name, algorithm, preset, flags, model}, ...]
(see examples/benchmark_alfworld.yaml)."""


@dataclass
class Args:
    """Run and compare algorithms over seeds on held-out games (``hiper-gym benchmark``)."""

    spec: str | None = None
    """a YAML spec of the runs (format above); the flags below override its fields"""
    algorithms: tuple[str, ...] = ()
    """without --spec: one row per algorithm, each with --preset"""
    preset: str = "tiny-cpu"
    """the preset of the --algorithms rows"""
    only: tuple[str, ...] = ()
    """run only these rows of the spec (the report still covers every row)"""
    output_dir: str = "runs/benchmark"
    """the benchmark directory: runs/, logs/, results.csv, summary.md, curves.png"""
    seeds: tuple[int, ...] | None = None
    """seeds (spec default: 1 2 3)"""
    env_id: str | None = None
    """the env of every run"""
    data_dir: str | None = None
    """the real data tree of every run, e.g. an ALFWorld tree (``json_2.1.1/``, ``logic/``)"""
    model: str | None = None
    """the base model of every run, e.g. an SFT model directory"""
    iterations: int | None = None
    """budget: training iterations per run"""
    env_steps: int | None = None
    """budget: env steps per run (becomes ceil(steps / (num_envs * max_turns)) iterations)"""
    eval_split: str | None = None
    """the held-out evaluation split (ALFWorld: valid_unseen)"""
    eval_every: int | None = None
    """evaluate on the held-out split every this many iterations"""
    flags: str = ""
    """extra `hiper-gym train` flags for every run, one shell-quoted string (write
    ``--flags='--num-envs 8'``: the value starts with ``--``)"""
    jobs: int = 1
    """trainings at once (each with --threads 1 when more than one)"""
    levels: tuple[float, ...] = DEFAULT_LEVELS
    """success levels of the sample-efficiency table"""
    mode: Literal["sampled", "greedy"] = "sampled"
    """which held-out evaluations the results, curves and summary use (greedy ones exist when
    the runs have ``--eval-greedy``)"""
    bootstrap_reps: int = BOOTSTRAP_REPS
    """stratified bootstrap draws"""
    progress: bool = True
    """a live table and progress bar (off: one plain line per event)"""
    report_only: bool = False
    """write results, summary and curves from the run directories; start nothing"""
    dry_run: bool = False
    """print each training's command and exit"""


def build_spec(args: Args) -> BenchmarkSpec:
    """The spec file (or the --algorithms rows), with the command line's values on top."""
    if args.spec is not None and args.algorithms:
        raise SpecError("give --spec or --algorithms, not both (--only selects rows of a spec)")
    if args.spec is not None:
        spec = load_spec(args.spec)
    elif args.algorithms:
        spec = BenchmarkSpec(runs=[RunSpec(a, a, args.preset) for a in args.algorithms])
    else:
        raise SpecError("nothing to run: give --spec FILE or --algorithms ALGO ...")
    overrides = {
        key: getattr(args, key)
        for key in (
            "env_id",
            "data_dir",
            "model",
            "iterations",
            "env_steps",
            "eval_split",
            "eval_every",
        )
        if getattr(args, key) is not None
    }
    if {"iterations", "env_steps"} & set(overrides):  # a budget flag replaces the spec's budget
        spec = dataclasses.replace(spec, iterations=None, env_steps=None)
    spec = dataclasses.replace(spec, **overrides)
    if args.seeds is not None:
        spec.seeds = list(args.seeds)
    spec.flags = spec.flags + shlex.split(args.flags)
    check_spec(spec)
    return spec


def check_args(args: Args, spec: BenchmarkSpec) -> None:
    """The benchmark's own flags."""
    if args.jobs < 1:
        raise SpecError(f"--jobs must be >= 1, got {args.jobs}")
    if args.bootstrap_reps < 100:
        raise SpecError(f"--bootstrap-reps must be >= 100, got {args.bootstrap_reps}")
    if not args.levels or not all(0 < level <= 1 for level in args.levels):
        raise SpecError(f"--levels must be in (0, 1], got {args.levels}")
    unknown = sorted(set(args.only) - {run.name for run in spec.runs})
    if unknown:
        raise SpecError(f"--only {' '.join(unknown)}: not rows of the spec")


def save_spec(spec: BenchmarkSpec, output_dir: Path) -> None:
    """Keep the effective spec beside the results (what was run)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(dataclasses.asdict(spec), sort_keys=False)
    (output_dir / "spec.yaml").write_text(text)


def initial_jobs(planned: Sequence[PlannedRun], only: Sequence[str], log_dir: Path) -> list[Job]:
    """Jobs with their starting status: done, busy (still training elsewhere) or queued.

    Rows outside ``only`` (when given) are left out unless they are done.
    """
    jobs = []
    for run in planned:
        job = Job(run)
        job.refresh()
        pid = training_elsewhere(pid_file(job, log_dir))
        if run_state(run.directory) == "done":
            job.status, job.iteration = "done", run.iterations
        elif only and run.run.name not in only:
            continue
        elif pid is not None:
            job.status, job.note = "busy", f"still training as pid {pid}"
        jobs.append(job)
    return jobs


class TerminateAsInterrupt:
    """SIGTERM and SIGHUP (a closed terminal) stop the benchmark like Ctrl-C.

    The trainings run in their own sessions, so without this they would outlive the benchmark.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGHUP)

    def __enter__(self) -> TerminateAsInterrupt:
        self.previous = {signum: signal.signal(signum, self._raise) for signum in self.SIGNALS}
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)

    @staticmethod
    def _raise(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt


def execute(args: Args, spec: BenchmarkSpec, planned: list[PlannedRun], output_dir: Path) -> int:
    """Run the trainings, then the report; the exit status (130 after Ctrl-C)."""
    jobs = initial_jobs(planned, args.only, output_dir / "logs")
    queued = sum(job.status == "queued" for job in jobs)
    done = sum(job.status == "done" for job in jobs)
    view = RichView() if args.progress else PlainView()
    interrupted = False
    with view, TerminateAsInterrupt():
        view.message(f"benchmark {output_dir}: {done} runs already done, {queued} to run")
        for job in jobs:
            if job.status == "busy":
                view.message(f"[{job.planned.key}] skipped: {job.note} (an earlier benchmark's)")
        view.update(jobs)
        try:
            run_jobs(
                jobs,
                parallel=args.jobs,
                python=sys.executable,
                log_dir=output_dir / "logs",
                view=view,
            )
        except KeyboardInterrupt:
            interrupted = True
    report(args, spec, planned, output_dir)
    failed = [job.planned.key for job in jobs if job.status == "failed"]
    if failed:
        print(f"failed: {', '.join(failed)} (logs in {output_dir / 'logs'})", file=sys.stderr)
    if interrupted:
        print("interrupted: run the same command again to resume", file=sys.stderr)
        return 130
    return 1 if failed else 0


def report(
    args: Args, spec: BenchmarkSpec, planned: Sequence[PlannedRun], output_dir: Path
) -> None:
    """Write the report and say where it is."""
    results = write_report(
        planned, spec, output_dir, levels=args.levels, mode=args.mode, reps=args.bootstrap_reps
    )
    finished = sum(result.finished for result in results)
    print(
        f"{finished}/{len(results)} runs finished; wrote {output_dir / RESULTS_FILE}, "
        f"{output_dir / SUMMARY_FILE}, {output_dir / CURVES_FILE}",
        flush=True,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``hiper-gym benchmark``; returns the exit status (2: a bad spec or flag)."""
    args = tyro.cli(
        Args,
        args=list(sys.argv[1:] if argv is None else argv),
        prog="hiper-gym benchmark",
        description=DESCRIPTION,
    )
    output_dir = Path(args.output_dir)
    try:
        spec = build_spec(args)
        check_args(args, spec)
        planned = plan_runs(spec, output_dir, args.jobs)
    except SpecError as error:
        print(f"hiper-gym benchmark: {error}", file=sys.stderr)
        return 2
    if args.dry_run:
        for run in planned:
            print(f"[{run_state(run.directory)}] {shlex.join(train_command(run))}")
        return 0
    save_spec(spec, output_dir)
    if args.report_only:
        report(args, spec, planned, output_dir)
        return 0
    return execute(args, spec, planned, output_dir)


def held_out_name(eval_split: str | None, env_id: str | None) -> str:
    """The split a summary names: ``held-out`` (or none given) resolved as the trainer does."""
    if eval_split not in (None, "held-out"):
        return str(eval_split)
    from hiper_gym.agents.learner_setup import held_out_split

    return held_out_split(env_id)


if __name__ == "__main__":
    raise SystemExit(main())
