"""run.json: a run remembers where its data came from and how each train in it ran."""

import json
from pathlib import Path

import pytest

from mnist_tf import config, data, runinfo


@pytest.fixture(autouse=True)
def no_manual_dir_env(monkeypatch):
    monkeypatch.delenv(data.MANUAL_DIR_ENV, raising=False)


def folders(tmp_path):
    for name in ("tfds", "archives", "other"):
        (tmp_path / name).mkdir()
    return tmp_path / "tfds", tmp_path / "archives", tmp_path / "other"


def test_each_start_is_recorded_with_its_data_and_runtime_settings(tmp_path, monkeypatch):
    tfds_dir, _, _ = folders(tmp_path)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    monkeypatch.chdir(tmp_path)
    runinfo.record_start(
        run_dir,
        data.Source(data_dir=tfds_dir, manual_dir="archives"),
        config.FAST,
        {"strategy": "default", "replicas": 1},
    )
    (run_dir / "backup").mkdir()
    (run_dir / "backup" / "epoch-2.keras").write_bytes(b"")
    resumed = config.FAST.replace(jit=True, steps_per_execution=4, deterministic=True)
    runinfo.record_start(run_dir, data.Source(), resumed, {"strategy": "mirrored", "replicas": 2})
    record = json.loads((run_dir / "run.json").read_text())
    assert record["data"] == {"data_dir": None, "manual_dir": None}  # the last start's data
    assert record["trained"] == [
        {
            "from_epoch": 0,
            "jit": None,
            "steps_per_execution": 1,
            "deterministic": False,
            "strategy": "default",
            "replicas": 1,
        },
        {
            "from_epoch": 2,
            "jit": True,
            "steps_per_execution": 4,
            "deterministic": True,
            "strategy": "mirrored",
            "replicas": 2,
        },
    ]


def remembering_run(tmp_path, data_dir, manual_dir):
    run_dir = tmp_path / "run"
    run_dir.mkdir(exist_ok=True)
    runinfo.record_start(run_dir, data.Source(data_dir=data_dir, manual_dir=manual_dir), config.FAST, {})
    (run_dir / "model.keras").write_bytes(b"")
    return run_dir


def test_a_run_lends_its_data_folders_to_commands_given_the_run_or_its_model(tmp_path, monkeypatch):
    tfds_dir, archives, _ = folders(tmp_path)
    monkeypatch.chdir(tmp_path)
    run_dir = remembering_run(tmp_path, "tfds", "archives")  # relative: remembered as absolute paths
    monkeypatch.chdir(run_dir)
    notes = []
    expected = data.Source(data_dir=tfds_dir, manual_dir=archives)
    assert runinfo.data_source(run_dir, None, None, notes.append) == expected
    assert runinfo.data_source(run_dir / "model.keras", None, None, notes.append) == expected
    assert notes == [f"reading MNIST as {run_dir} was trained: --data-dir {tfds_dir} --manual-dir {archives}"] * 2
    # A model outside any run, or no model: the options alone.
    (tmp_path / "elsewhere.keras").write_bytes(b"")
    assert runinfo.data_source(tmp_path / "elsewhere.keras", None, None) == data.Source()
    assert runinfo.data_source(None, None, "x") == data.Source(manual_dir=Path("x"))


def test_an_option_wins_over_what_the_run_remembers_one_folder_at_a_time(tmp_path, monkeypatch):
    tfds_dir, archives, other = folders(tmp_path)
    run_dir = remembering_run(tmp_path, tfds_dir, archives)
    assert runinfo.data_source(run_dir, other, None) == data.Source(data_dir=other, manual_dir=archives)
    assert runinfo.data_source(run_dir, None, other) == data.Source(data_dir=tfds_dir, manual_dir=other)
    monkeypatch.setenv(data.MANUAL_DIR_ENV, str(other))  # the environment variable counts as given
    assert runinfo.data_source(run_dir, None, None) == data.Source(data_dir=tfds_dir, manual_dir=other)


def test_a_remembered_folder_that_is_gone_is_left_out_with_a_note(tmp_path):
    tfds_dir, archives, _ = folders(tmp_path)
    run_dir = remembering_run(tmp_path, tfds_dir, archives)
    archives.rmdir()
    notes = []
    assert runinfo.data_source(run_dir, None, None, notes.append) == data.Source(data_dir=tfds_dir)
    assert (
        notes[0]
        == f"{run_dir} was trained with --manual-dir {archives}, which no longer exists: reading MNIST without it"
    )
    assert notes[1] == f"reading MNIST as {run_dir} was trained: --data-dir {tfds_dir}"


def test_a_run_trained_without_data_options_or_an_unreadable_record_lends_nothing(tmp_path):
    run_dir = remembering_run(tmp_path, None, None)
    notes = []
    assert runinfo.data_source(run_dir, None, None, notes.append) == data.Source() and notes == []
    (run_dir / "run.json").write_text('{"data": ')
    assert runinfo.data_source(run_dir, None, None, notes.append) == data.Source()
    assert notes == [f"cannot read {run_dir / 'run.json'} (JSONDecodeError): its data folders are not used"]


@pytest.fixture(scope="module")
def resumed_run(tmp_path_factory, real_source):
    """A real run killed after epoch 1 and resumed with XLA on and 4 steps per execution: (run dir, the resume)."""
    from test_faults import SHORT, killed, run_child
    from test_train import real_args

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
    from test_faults import run_child

    run_dir, _ = resumed_run
    remembered = json.loads((run_dir / "run.json").read_text())["data"]
    manual_dir = str(ARCHIVES.absolute()) if archives_present() else None
    assert remembered == {"data_dir": str(TEST_DATA_DIR.absolute()), "manual_dir": manual_dir}
    # TFDS's default data dir is empty and offline, so only the run's folders can give MNIST here.
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "empty"))
    monkeypatch.delenv(data.MANUAL_DIR_ENV, raising=False)
    evaluated = run_child(["evaluate", "--model", run_dir, "--out", tmp_path / "report"])
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    assert f"note: reading MNIST as {run_dir} was trained: --data-dir {TEST_DATA_DIR.absolute()}" in evaluated.stderr
    assert "on 10,000 images" in evaluated.stdout
    exported = run_child(["export", "--model", run_dir / "model.keras", "--out", tmp_path / "export"])
    assert exported.returncode == 0, exported.stderr[-2000:]
    assert "note: reading MNIST as" in exported.stderr
    assert (tmp_path / "export" / "saved_model" / "mnist" / "1" / "saved_model.pb").is_file()
