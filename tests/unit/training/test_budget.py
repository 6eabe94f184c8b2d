"""`--time-budget`: durations, the plan from a measured step time, the guard, and a run that keeps its plan."""

import json

import pytest
from helpers import QUICK, assert_one_line_error, run

from mnist_tf import config
from mnist_tf.core.errors import UserError
from mnist_tf.core.rundir import RunDir
from mnist_tf.training import budget


@pytest.mark.parametrize(
    "text, seconds",
    [("10m", 600), ("90s", 90), ("600", 600), ("1h30m", 5400), ("1.5h", 5400), ("2min", 120), (" 45 ", 45)],
)
def test_durations_read_as_people_write_them(text, seconds):
    assert config.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "ten minutes", "10x", "-5m", "0", "m"])
def test_a_wrong_duration_says_how_to_write_one(text):
    with pytest.raises(UserError, match="10m"):
        config.parse_duration(text)


def test_the_plan_fits_whole_epochs_inside_the_budget_and_never_more_than_the_recipe():
    cfg = config.DEFAULT.replace(epochs=20, batch_size=100, time_budget=600.0)
    # 600 steps of 0.1 s and 1 s of overhead: 61 s an epoch, 9 fit 600 s.
    plan = budget.make_plan(cfg, 600.0, 0.1, 60000)
    assert (plan.steps_per_epoch, plan.epoch_seconds, plan.epochs) == (600, 61.0, 9)
    assert plan.planned_seconds <= 600 < plan.planned_seconds + plan.epoch_seconds
    assert budget.make_plan(cfg, 600.0, 0.001, 60000).epochs == 20  # a fast machine trains the recipe as it is
    assert budget.make_plan(cfg, 10.0, 0.1, 60000).epochs == 1  # at least one epoch
    with_startup = budget.make_plan(cfg, 600.0, 0.1, 60000, startup_seconds=60.0)  # 540 s left: 8 epochs
    assert with_startup.epochs == 8 and with_startup.planned_seconds == 60.0 + 8 * 61.0


def test_the_plan_line_says_what_a_cut_costs():
    plan = budget.Plan(600.0, 20, 9, 0.1, 600, 61.0)
    line = plan.describe({5: 0.9941, 13: 0.9957, 20: 0.997})
    assert line.startswith("time budget 10.0 min: 9 epochs, about 9.2 min on this CPU (100 ms per step)")
    assert (
        "expect about 99.49%"
        in line  # halfway from 5 to 13 epochs and "The recipe's 20 epochs would take about 20.3 min here for about 99.70%" in line
    )
    assert "would take" not in budget.Plan(600.0, 9, 9, 0.1, 600, 61.0).describe()
    assert "expect" not in budget.Plan(600.0, 20, 3, 0.1, 600, 61.0).describe({5: 0.9941, 20: 0.997})


def test_a_resumed_run_may_spend_what_its_finished_epochs_left_of_the_budget():
    plan = budget.Plan(300.0, 20, 4, 0.2, 300, 61.0)
    assert plan.seconds_left(epochs_done=0) == 300.0
    assert plan.seconds_left(epochs_done=2) == 178.0
    assert plan.seconds_left(epochs_done=4) == 61.0  # never less than one epoch


def test_a_resumed_run_keeps_its_plan_without_measuring(tmp_path):
    run_dir = RunDir(tmp_path)
    kept = budget.Plan(300.0, 20, 4, 0.2, 300, 61.0)
    run_dir.plan.write_text(json.dumps(kept.to_dict()))
    plan, new = budget.planned(config.DEFAULT.replace(time_budget=9999.0), run_dir, datasets=None, strategy=None)
    assert (plan, new) == (kept, False)


def test_the_guard_stops_before_an_epoch_that_would_end_past_the_budget(monkeypatch):
    clock = iter([0.0, 0.0, 40.0, 40.0, 80.0, 80.0, 200.0])
    monkeypatch.setattr(budget.time, "perf_counter", lambda: next(clock))

    class Model:
        stop_training = False

    guard = budget.BudgetGuard(100.0)
    guard.set_model(Model())
    guard.set_params({"epochs": 5})
    guard.on_train_begin()
    guard.on_epoch_begin(0)
    guard.on_epoch_end(0)  # 40 s done, the next would end at 80 s: go on
    assert not guard.model.stop_training
    guard.on_epoch_begin(1)
    guard.on_epoch_end(1)  # 80 s done, the next would end at 120 s: stop
    assert guard.model.stop_training and guard.stopped_after == 2


def test_train_with_a_budget_prints_records_and_keeps_to_its_plan(tmp_path, mock_mnist):
    run_dir = tmp_path / "run"
    # Mock MNIST: 48 images, 3 steps of 16; the epoch's fixed overhead alone is past half a second.
    result = run("train", *QUICK, "--epochs", "30", "--time-budget", "0.5s", "--run-dir", run_dir)
    assert result.exit_code == 0, result.output
    assert "time budget 0.5 s: 1 epoch," in result.output and "The recipe's 30 epochs would take" in result.output
    plan = json.loads((run_dir / "plan.json").read_text())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert plan["epochs"] == metrics["epochs"] == metrics["time_budget"]["epochs"] == 1
    assert plan["recipe_epochs"] == 30 and metrics["config"]["epochs"] == 30  # the recipe stays the run's identity
    assert metrics["machine"]["cpu"] and isinstance(metrics["machine"]["isa"], list)


def test_a_bad_time_budget_is_a_usage_error(tmp_path):
    result = run("train", "--time-budget", "soon", "--run-dir", tmp_path / "run")
    assert result.exit_code == 2 and "10m" in result.output and not (tmp_path / "run").exists()


def test_a_zero_time_budget_set_as_a_field_is_refused(tmp_path):
    assert_one_line_error(run("train", "--set", "time_budget=0", "--run-dir", tmp_path / "run"), "time budget")
