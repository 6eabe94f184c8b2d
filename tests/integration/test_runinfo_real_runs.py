"""run.json: a run remembers where its data came from and how each train in it ran."""

import json

import pytest

from mnist_tf.data import sources


@pytest.fixture(scope="module")
def resumed_run(tmp_path_factory, real_source):
    """A real run killed after epoch 1 and resumed with XLA on and 4 steps per execution: (run dir, the resume)."""
    from helpers import SHORT, killed, real_args, run_child

    run_dir = tmp_path_factory.mktemp("resumed") / "run"
    first = run_child(real_args(run_dir, *SHORT), fault="epoch-2.keras:kill")  # epoch 1's state stays
    assert killed(first), first.stderr[-2000:]
    return run_dir, run_child(real_args(run_dir, *SHORT, "--jit", "on", "--set", "steps_per_execution=4"))


@pytest.mark.slow
def test_a_run_resumes_with_another_jit_and_records_both(resumed_run):
    run_dir, result = resumed_run
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Resuming with other runtime settings (jit: null -> true, steps_per_execution: 1 -> 4)" in result.stderr
    assert "after epoch 1" in result.stderr and "Epoch 1/2" not in result.stdout
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epochs"] == 2 and metrics["resumed_after_epoch"] == 1 and metrics["test_accuracy"] > 0.9
    assert metrics["jit_compile"] is True and metrics["config"]["steps_per_execution"] == 4
    assert json.loads((run_dir / "config.json").read_text())["jit"] is True  # the settings it finished with
    trained = json.loads((run_dir / "run.json").read_text())["trained"]
    assert [(t["from_epoch"], t["jit"], t["steps_per_execution"]) for t in trained] == [(0, None, 1), (1, True, 4)]


@pytest.mark.slow
def test_a_run_trained_with_data_options_evaluates_and_exports_without_them(resumed_run, tmp_path, monkeypatch):
    from conftest import ARCHIVES, TEST_DATA_DIR, archives_present
    from helpers import run_child

    run_dir, _ = resumed_run
    remembered = json.loads((run_dir / "run.json").read_text())["data"]
    manual_dir = str(ARCHIVES.absolute()) if archives_present() else None
    digits = [str(c) for c in range(10)]
    assert remembered == {
        "data_dir": str(TEST_DATA_DIR.absolute()),
        "manual_dir": manual_dir,
        "dataset": "mnist",
        "class_names": digits,
    }
    # TFDS's default data dir is empty and offline, so only the run's folders can give MNIST here.
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "empty"))
    monkeypatch.delenv(sources.MANUAL_DIR_ENV, raising=False)
    evaluated = run_child(["evaluate", "--model", run_dir, "--out", tmp_path / "report"])
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    assert f"note: reading MNIST as {run_dir} was trained: --data-dir {TEST_DATA_DIR.absolute()}" in evaluated.stderr
    assert "on 10,000 images" in evaluated.stdout
    exported = run_child(["export", "--model", run_dir / "model.keras", "--out", tmp_path / "export"])
    assert exported.returncode == 0, exported.stderr[-2000:]
    assert "note: reading MNIST as" in exported.stderr
    assert (tmp_path / "export" / "saved_model" / "mnist" / "1" / "saved_model.pb").is_file()
