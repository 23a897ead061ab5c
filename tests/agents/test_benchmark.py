"""hiper-gym benchmark: statistics on hand-made results, the report from fake run directories, the
Ctrl-C path on a stand-in process, and one tiny end-to-end comparison through the real trainer."""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from hiper_gym.agents import benchmark
from hiper_gym.agents.benchmark import (
    BenchmarkSpec,
    EvalPoint,
    Job,
    PlannedRun,
    RunSpec,
    SpecError,
)

ROOT = Path(__file__).resolve().parents[2]
TASKS = ("clean", "heat", "pick")


# --- statistics ----------------------------------------------------------------------------------


def test_iqm_trims_a_quarter_from_each_end_like_scipy_trim_mean():
    assert benchmark.iqm(np.arange(1, 9)) == 4.5  # 1..8: mean of 3..6
    assert benchmark.iqm([0.2, 0.4, 0.9]) == pytest.approx(0.5)  # n < 4: nothing is cut
    assert benchmark.iqm([[0.0, 1.0], [0.0, 1.0], [5.0, -5.0]]) == 0.5  # a matrix is flattened
    assert benchmark.iqm([0.0, 0.0, 1.0, 100.0, 1.0, 1.0, 1.0, 1.0]) == 1.0  # outliers cut


def test_t_interval_matches_the_t_table():
    low, high = benchmark.t_interval([0.5, 0.7, 0.9])  # mean 0.7, s 0.2, t(2) 4.303
    assert (low, high) == pytest.approx((0.7 - 4.303 * 0.2 / math.sqrt(3), 0.7 + 0.49688), abs=1e-4)
    assert all(math.isnan(bound) for bound in benchmark.t_interval([0.5]))
    assert benchmark.t_interval([0.4, 0.4, 0.4]) == pytest.approx((0.4, 0.4))
    assert benchmark.t_quantile_975(1) == 12.706 and benchmark.t_quantile_975(30) == 2.042
    assert benchmark.t_quantile_975(60) == pytest.approx(2.0003, abs=1e-3)
    assert benchmark.t_quantile_975(10_000) == pytest.approx(1.96, abs=1e-3)


def test_stratified_bootstrap_intervals_contain_the_estimate_and_are_reproducible():
    rng = np.random.default_rng(0)
    scores = rng.uniform(size=(5, 6))
    for statistic, estimate in (("iqm", benchmark.iqm(scores)), ("mean", scores.mean())):
        low, high = benchmark.stratified_bootstrap_ci(scores, statistic, reps=5000)
        assert scores.min() <= low < estimate < high <= scores.max()
        assert (low, high) == benchmark.stratified_bootstrap_ci(scores, statistic, reps=5000)
    same = np.tile([0.2, 0.5, 0.9], (3, 1))  # every seed alike: no spread to resample
    assert benchmark.stratified_bootstrap_ci(same, "mean", reps=500) == pytest.approx(
        (0.5333,) * 2, abs=1e-3
    )


def test_the_bootstrap_resamples_seeds_within_each_task_type():
    # task 0 is always 0, task 1 always 1: resampling inside columns keeps the mean at 0.5
    scores = np.array([[0.0, 1.0], [0.0, 1.0], [0.0, 1.0]])
    assert benchmark.stratified_bootstrap_ci(scores, "mean", reps=500) == (0.5, 0.5)


def point(iteration, success, env_steps=None):
    steps = 100.0 * iteration if env_steps is None else env_steps
    return EvalPoint(iteration, 4 * iteration, steps, float(iteration), success, 0.0, 1.0, 8)


def test_first_crossing_is_the_first_evaluation_at_or_above_the_level():
    points = [point(5, 0.3), point(10, 0.7), point(15, 0.6), point(20, 0.9)]
    assert benchmark.first_crossing(points, 0.7).iteration == 10  # equal counts
    assert benchmark.first_crossing(points, 0.8).env_steps == 2000
    assert benchmark.first_crossing(points, 0.95) is None


def test_wall_time_adds_up_over_resumes():
    rows = [{"iteration": str(i), "time/elapsed": str(t)} for i, t in [(1, 10), (2, 20), (3, 4)]]
    assert benchmark.cumulative_elapsed(rows) == {1: 10.0, 2: 20.0, 3: 24.0}


# --- the spec ------------------------------------------------------------------------------------


def test_the_example_spec_holds_the_papers_rows():
    spec = benchmark.load_spec(ROOT / "examples" / "benchmark_alfworld.yaml")
    benchmark.check_spec(spec)
    assert [run.name for run in spec.runs] == [
        "hiper",
        "ppo-flat",
        "ppo-plan-execute",
        "grpo-flat",
        "grpo-plan-execute",
        "gigpo",
    ]
    assert spec.seeds == [1, 2, 3] and spec.eval_split == "valid_unseen"
    assert spec.flags[-2:] == ["--eval-episodes", "48"]
    flat_rows = {run.name for run in spec.runs if "flat" in run.flags}
    assert {run.name for run in spec.runs if run.model and "base-flat" in run.model} == flat_rows
    assert benchmark.budget_iterations(spec, SimpleNamespace(num_envs=32, max_turns=40)) == 40


def test_the_webshop_spec_holds_the_same_rows_on_the_test_goals():
    alfworld = benchmark.load_spec(ROOT / "examples" / "benchmark_alfworld.yaml")
    spec = benchmark.load_spec(ROOT / "examples" / "benchmark_webshop.yaml")
    benchmark.check_spec(spec)
    assert [(r.name, r.algorithm, r.flags) for r in spec.runs] == [
        (r.name, r.algorithm, r.flags) for r in alfworld.runs
    ]
    assert spec.env_id == "HiPER-WebShop-v0" and spec.eval_split == "test" and spec.seeds == [1]
    assert benchmark.budget_iterations(spec, SimpleNamespace(num_envs=32, max_turns=15)) == 20


def write_yaml(tmp_path, text):
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("runs: [{algorithm: ppo, flgs: []}]", "unknown keys ['flgs']"),
        ("runs: []", "non-empty list"),
        ("runs: [{name: a}]", "needs an algorithm"),
        ("seeds: [1, x]\nruns: [{algorithm: ppo}]", "seeds must be a list of integers"),
        ("runs: [{algorithm: ppo}, {algorithm: ppo}]", "repeated: ppo"),
        ("iterations: 3\nenv_steps: 9\nruns: [{algorithm: ppo}]", "not both"),
        ("runs: [{algorithm: ppo, flags: [--seed, 3]}]", "--seed are set by the benchmark"),
        ("runs: [{algorithm: ppo, name: a/b}]", "run name 'a/b'"),
        ("runs: [unclosed", "--spec"),
    ],
)
def test_bad_specs_are_one_clear_error(tmp_path, text, message):
    with pytest.raises(SpecError, match=message.replace("[", r"\[").replace("]", r"\]")):
        benchmark.check_spec(benchmark.load_spec(write_yaml(tmp_path, text)))


def test_flags_override_the_spec_and_a_string_of_flags_is_split(tmp_path):
    path = write_yaml(
        tmp_path, "iterations: 9\nflags: '--eval-episodes 4'\nruns: [{algorithm: ppo}]"
    )
    args = benchmark.Args(spec=str(path), env_steps=1000, seeds=(4,), flags="--num-envs 2")
    spec = benchmark.build_spec(args)
    assert (spec.iterations, spec.env_steps, spec.seeds) == (None, 1000, [4])
    assert spec.flags == ["--eval-episodes", "4", "--num-envs", "2"]
    assert benchmark.budget_iterations(spec, SimpleNamespace(num_envs=2, max_turns=3)) == 167


def test_bad_command_lines_exit_2_before_any_training(tmp_path, capsys):
    assert benchmark.main(["--output-dir", str(tmp_path)]) == 2
    assert "nothing to run" in capsys.readouterr().err
    assert (
        benchmark.main(["--algorithms", "ppo", "--jobs", "0", "--output-dir", str(tmp_path)]) == 2
    )
    assert "--jobs must be >= 1" in capsys.readouterr().err
    argv = ["--algorithms", "sarsa", "--output-dir", str(tmp_path)]
    assert benchmark.main(argv) == 2
    assert "unknown algorithm 'sarsa'" in capsys.readouterr().err
    argv = ["--algorithms", "ppo", "--flags=--num-envs 0", "--output-dir", str(tmp_path)]
    assert benchmark.main(argv) == 2
    assert "--num-envs must be a finite number >= 1" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


# --- the report from hand-written run directories ------------------------------------------------

#: success at iterations 5, 10, 15, 20 (the last one final), per row and seed
CURVES = {
    "fast": {1: [0.5, 0.8, 0.9, 0.9], 2: [0.4, 0.7, 0.8, 0.85], 3: [0.6, 0.8, 0.8, 0.95]},
    "slow": {1: [0.1, 0.2, 0.5, 0.6], 2: [0.0, 0.3, 0.4, 0.5], 3: [0.2, 0.2, 0.6, 0.7]},
}


def fake_run(directory: Path, curve, *, finished=True):
    """metrics.csv, eval.csv and final_eval.json as the trainer writes them (20 iterations)."""
    directory.mkdir(parents=True)
    (directory / "config.json").write_text(json.dumps({"eval_split": "valid_unseen"}))
    with (directory / "metrics.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["iteration", "episodes", "env_steps", "train/success", "time/elapsed"])
        for i in range(1, 21):  # resumed after iteration 12: elapsed restarts
            writer.writerow([i, 4 * i, 100 * i, 0.5, 3.0 * i if i <= 12 else 3.0 * (i - 12)])
    rows = []
    for k, success in enumerate(curve if finished else curve[:2]):
        iteration = 5 * (k + 1)
        cells = [("all", success)] + [
            (task, min(1.0, success + 0.05 * j)) for j, task in enumerate(TASKS)
        ]
        for mode, shift in (("sampled", 0.0), ("greedy", -0.1)):
            for task, value in cells:
                rows.append(
                    [
                        iteration,
                        4 * iteration,
                        100 * iteration,
                        "valid_unseen",
                        mode,
                        task,
                        value + shift,
                        0,
                        1,
                        12,
                    ]
                )
    with (directory / "eval.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            [
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
            ]
        )
        writer.writerows(rows)
    if finished:
        final = {"success": curve[-1], "split": "valid_unseen", "train_games": {"success": 0.95}}
        (directory / "final_eval.json").write_text(json.dumps(final))


def fake_benchmark(tmp_path, *, unfinished=()):
    spec = BenchmarkSpec(
        runs=[RunSpec("fast", "hiper"), RunSpec("slow", "ppo")], seeds=[1, 2, 3], iterations=20
    )
    planned = []
    for run in spec.runs:
        for seed in spec.seeds:
            directory = tmp_path / "runs" / f"{run.name}__seed{seed}"
            fake_run(directory, CURVES[run.name][seed], finished=(run.name, seed) not in unfinished)
            planned.append(PlannedRun(run, seed, directory, 20, []))
    return spec, planned


def test_report_from_run_directories(tmp_path):
    spec, planned = fake_benchmark(tmp_path, unfinished=[("slow", 3)])
    results = benchmark.write_report(planned, spec, tmp_path, reps=2000)

    rows = list(csv.DictReader((tmp_path / "results.csv").open()))
    assert len(rows) == 5 * 4 + 2  # 4 evaluations per finished run, 2 for the unfinished one
    first = rows[0]
    assert (first["run"], first["algorithm"], first["seed"], first["iteration"]) == (
        "fast",
        "hiper",
        "1",
        "5",
    )
    assert (
        float(first["env_steps"]) == 500 and float(first["success"]) == 0.5
    )  # sampled, not greedy
    assert float(first["success/heat"]) == pytest.approx(0.55)
    last = [row for row in rows if row["run"] == "fast" and row["seed"] == "1"][-1]
    assert last["final"] == "1" and float(last["wall_time_s"]) == pytest.approx(36.0 + 24.0)
    assert sum(row["final"] == "1" for row in rows) == 5

    summary = (tmp_path / "summary.md").read_text()
    fast = next(line for line in summary.splitlines() if line.startswith("| fast | hiper"))
    cells = [cell.strip() for cell in fast.strip("|").split("|")]
    assert cells[2] == "3/3" and float(cells[3]) == pytest.approx(
        np.mean([0.9, 0.85, 0.95]), abs=1e-3
    )
    assert float(cells[4]) == pytest.approx(0.05, abs=1e-3)  # std over seeds
    assert cells[8] == "0.950"  # the training games beside it
    assert "| slow | ppo | 2/3 |" in summary
    assert "## Per task type" in summary and "| fast | 0.90 ± 0.05 | 0.95 ± 0.05 |" in summary
    # sample efficiency: fast reaches 0.8 at iterations 10, 15, 10; slow never does
    assert (
        "| fast | 0.80 | 3/3 | 1,167 | 12 | "
        "s1: 1,000 (it 10); s2: 1,500 (it 15); s3: 1,000 (it 10) |" in summary
    )
    assert "| slow | 0.80 | 0/3 | - | - |" in summary
    assert "Iterations to first reach 80% held-out success: fast 12" in summary

    png = (tmp_path / "curves.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    assert [result.finished for result in results].count(False) == 1


def test_webshop_scores_are_reported_beside_success(tmp_path):
    from hiper_gym.agents.run_logger import RunLogger

    spec = BenchmarkSpec(runs=[RunSpec("shop", "grpo")], seeds=[1, 2], iterations=10)
    planned = []
    for seed, (success, score) in zip(spec.seeds, [(0.05, 0.40), (0.10, 0.50)], strict=True):
        directory = tmp_path / "runs" / f"shop__seed{seed}"
        logger = RunLogger(directory, ["iteration"], tensorboard=False)
        block = {"success": success, "interval": (0.0, 0.2), "episodes": 64, "score": score}
        position = {"iteration": 10, "episodes": 320, "env_steps": 3000, "split": "test"}
        logger.log_evaluation({**position, "mode": "sampled"}, {**block, "per_task": {}})
        final = {**block, "train_games": {"success": 0.2, "score": 0.6}}
        (directory / "final_eval.json").write_text(json.dumps(final))
        planned.append(PlannedRun(spec.runs[0], seed, directory, 10, []))
    benchmark.write_report(planned, spec, tmp_path, reps=200)
    rows = list(csv.DictReader((tmp_path / "results.csv").open()))
    assert [float(row["score"]) for row in rows] == [0.40, 0.50]
    summary = (tmp_path / "summary.md").read_text()
    assert "| minutes | score | train score |" in summary
    shop = next(line for line in summary.splitlines() if line.startswith("| shop |"))
    assert shop.endswith("| 0.450 | 0.600 |")  # means over the seeds


def test_the_behaviour_table_averages_the_last_iterations_then_the_seeds():
    metrics = [{"train/switch_rate": str(v), "losses/kl": ""} for v in (9.0, 0.2, 0.4)]
    assert benchmark.recent_means(metrics, ["train/switch_rate", "losses/kl"], 2) == {
        "train/switch_rate": pytest.approx(0.3)  # the last two; an empty column is left out
    }
    runs = [
        benchmark.RunResult("h", "hiper", seed, True, [], behaviour={"train/switch_rate": rate})
        for seed, rate in ((1, 0.3), (2, 0.5))
    ]
    runs.append(benchmark.RunResult("p", "ppo", 1, True, []))
    rows = benchmark.behaviour_rows(runs)
    switch = 1 + list(benchmark.BEHAVIOUR_COLUMNS).index("train/switch_rate")
    assert rows[0][0] == "h" and rows[0][switch] == "0.4"
    assert rows[1] == ["p"] + ["-"] * len(benchmark.BEHAVIOUR_COLUMNS)


def test_the_mean_curve_interpolates_the_seeds_onto_shared_env_steps():
    runs = [
        benchmark.RunResult("a", "ppo", 1, True, [point(1, 0.0, 0), point(2, 1.0, 100)]),
        benchmark.RunResult(
            "a", "ppo", 2, True, [point(1, 0.0, 0), point(2, 0.5, 50), point(3, 0.5, 200)]
        ),
    ]
    grid, mean, low, high = benchmark.mean_curve(runs)
    assert grid.tolist() == [0, 50, 100]  # up to where every seed has been
    assert mean.tolist() == pytest.approx([0.0, 0.5, 0.75])
    assert (low <= mean).all() and (mean <= high).all() and (high <= 1).all()


def test_live_table_and_plain_lines(tmp_path, capsys):
    from rich.console import Console

    spec, planned = fake_benchmark(tmp_path, unfinished=[("slow", 3)])
    jobs = benchmark.initial_jobs(planned, (), tmp_path / "logs")
    assert [job.status for job in jobs] == ["done"] * 5 + ["queued"]
    assert jobs[-1].iteration == 20 and jobs[-1].success == pytest.approx(0.2)  # its latest eval
    console = Console(record=True, width=120)
    console.print(benchmark.jobs_table(jobs))
    text = console.export_text()
    assert "slow" in text and "queued" in text and "20/20" in text and "0.200" in text
    view = benchmark.PlainView()
    jobs[-1].status = "running"
    view.update(jobs)
    assert (
        "[slow__seed3] iteration 20/20 success 0.200 | all runs 120/120 iterations"
        in capsys.readouterr().out
    )
    assert benchmark.status_counts(jobs) == "5 done, 1 running"
    (jobs[-1].planned.directory / "eval.csv").unlink()  # before any held-out evaluation
    jobs[-1].refresh()
    assert jobs[-1].success_text() == "0.500 train"


def test_a_run_still_training_from_an_earlier_benchmark_is_left_alone(tmp_path):
    import subprocess

    spec, planned = fake_benchmark(tmp_path, unfinished=[("slow", 3)])
    logs = tmp_path / "logs"
    logs.mkdir()
    script = "import time; print('ready', flush=True); time.sleep(60)"
    sleeper = subprocess.Popen([sys.executable, "-c", script, "hiper_gym"], stdout=subprocess.PIPE)
    try:
        assert sleeper.stdout.readline() == b"ready\n"
        (logs / "slow__seed3.pid").write_text(str(sleeper.pid))
        job = benchmark.initial_jobs(planned, (), logs)[-1]
        assert (job.status, job.note) == ("busy", f"still training as pid {sleeper.pid}")
    finally:
        sleeper.kill()
        sleeper.wait()
    assert benchmark.initial_jobs(planned, (), logs)[-1].status == "queued"  # it has exited
    only_fast = benchmark.initial_jobs(planned, ("fast",), logs)  # done runs stay in the view
    assert [job.planned.key for job in only_fast if job.status != "done"] == []
    assert len(only_fast) == 5


def test_commands_for_new_killed_and_finished_runs(tmp_path):
    run = RunSpec("h", "hiper")
    planned = PlannedRun(
        run, 1, tmp_path / "runs" / "h__seed1", 7, ["hiper", "tiny-cpu", "--seed", "1"]
    )
    assert benchmark.run_state(planned.directory) == "new"
    assert benchmark.train_command(planned, "py")[4:] == ["hiper", "tiny-cpu", "--seed", "1"]
    (planned.directory / "checkpoints").mkdir(parents=True)
    (planned.directory / "checkpoints" / "latest").write_text("iter_000003")
    assert benchmark.run_state(planned.directory) == "resume"
    resume = benchmark.train_command(planned, "py")
    assert resume[:4] == ["py", "-m", "hiper_gym.cli", "train"]
    assert resume[4:] == [
        "hiper",
        "--resume",
        str(planned.directory),
        "--num-iterations",
        "7",
        "--no-progress",
    ]
    (planned.directory / "final_eval.json").write_text("{}")
    assert benchmark.run_state(planned.directory) == "done"


STAND_IN = """
import signal, sys, time
from pathlib import Path
def stop(signum, frame):
    Path(sys.argv[1]).with_name("saved").write_text("checkpoint")
    sys.exit(130)
signal.signal(signal.SIGINT, stop)
Path(sys.argv[1]).write_text("ready")
time.sleep(60)
"""


class InterruptOnceReady(benchmark.PlainView):
    """Ctrl-C as soon as the stand-in training has installed its handler."""

    def __init__(self, ready: Path):
        super().__init__()
        self.ready, self.interrupted = ready, False

    def update(self, jobs):
        if self.ready.exists() and not self.interrupted:
            self.interrupted = True
            raise KeyboardInterrupt


def test_ctrl_c_sends_one_sigint_and_waits_for_the_checkpoint(tmp_path, monkeypatch):
    ready = tmp_path / "ready"
    monkeypatch.setattr(
        benchmark,
        "train_command",
        lambda planned, python: [sys.executable, "-c", STAND_IN, str(ready)],
    )
    monkeypatch.setattr(benchmark, "POLL_SECONDS", 0.05)
    job = Job(PlannedRun(RunSpec("h", "hiper"), 1, tmp_path / "runs" / "h__seed1", 3, []))
    with pytest.raises(KeyboardInterrupt):
        benchmark.run_jobs(
            [job],
            parallel=1,
            python=sys.executable,
            log_dir=tmp_path / "logs",
            view=InterruptOnceReady(ready),
        )
    assert job.status == "stopped" and job.process.returncode == 130
    assert not (tmp_path / "logs" / "h__seed1.pid").exists()
    assert (tmp_path / "saved").read_text() == "checkpoint"
    assert "=== " in (tmp_path / "logs" / "h__seed1.log").read_text()


# --- end to end through the real trainer ---------------------------------------------------------

TINY = "--num-envs 2 --max-turns 2 --eval-episodes 2 --env-workers 0 --no-tensorboard"
TINY += " --base-policy none"  # HiPER's preset clones a base first
SPEC = """
seeds: [1, 2]
iterations: 2
eval_split: valid_unseen
eval_every: 1
runs:
  - {name: hiper, algorithm: hiper}
  - {name: grpo, algorithm: grpo, flags: [--group-size, 2]}
"""


def test_two_algorithms_two_seeds_end_to_end_with_a_killed_run_resumed(tmp_path, monkeypatch):
    from hiper_gym.agents import trainer

    spec_path = write_yaml(tmp_path, SPEC)
    out = tmp_path / "bench"
    argv = ["--spec", str(spec_path), "--output-dir", str(out), f"--flags={TINY}", "--no-progress"]
    # a run killed before its final evaluation: one iteration and a checkpoint, nothing after
    killed = out / "runs" / "hiper__seed2"
    first = [
        "hiper",
        "tiny-cpu",
        *TINY.split(),
        "--eval-split",
        "valid_unseen",
        "--eval-every",
        "1",
    ]
    first += ["--seed", "2"]
    first += [
        "--output-dir",
        str(killed.parent),
        "--run-name",
        killed.name,
        "--num-iterations",
        "1",
    ]
    assert trainer.main([*first, "--no-progress"]) == 0
    (killed / "final_eval.json").unlink()
    assert benchmark.run_state(killed) == "resume"

    assert benchmark.main([*argv, "--jobs", "2"]) == 0
    for name in ("hiper__seed1", "hiper__seed2", "grpo__seed1", "grpo__seed2"):
        assert benchmark.run_state(out / "runs" / name) == "done", name
    assert "--resume" in (out / "logs" / "hiper__seed2.log").read_text()
    resumed = list(csv.DictReader((killed / "metrics.csv").open()))
    assert [row["iteration"] for row in resumed] == ["1", "2"]

    rows = list(csv.DictReader((out / "results.csv").open()))
    assert {(row["run"], row["seed"]) for row in rows} == {
        (r, s) for r in ("hiper", "grpo") for s in ("1", "2")
    }
    assert sum(row["final"] == "1" for row in rows) == 4
    assert all(float(row["env_steps"]) > 0 for row in rows)
    summary = (out / "summary.md").read_text()
    assert "| hiper | hiper | 2/2 |" in summary and "| grpo | grpo | 2/2 |" in summary
    assert (out / "curves.png").stat().st_size > 0 and (out / "spec.yaml").exists()

    def no_training(command, log_path):
        raise AssertionError(f"started {command}")

    monkeypatch.setattr(benchmark, "launch", no_training)
    assert benchmark.main(argv) == 0  # every run finished: nothing starts, the report is rewritten
