"""run.json: a run remembers where its data came from and how each train in it ran."""

import json
import shutil
from pathlib import Path

import numpy as np

from mnist_tf import config
from mnist_tf.data import sources
from mnist_tf.training import runinfo


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
        sources.Source(data_dir=tfds_dir, manual_dir="archives"),
        config.FAST,
        {"strategy": "default", "replicas": 1},
    )
    (run_dir / "backup").mkdir()
    (run_dir / "backup" / "epoch-2.keras").write_bytes(b"")
    resumed = config.FAST.replace(jit=True, steps_per_execution=4, deterministic=True, time_budget=600.0)
    runinfo.record_start(run_dir, sources.Source(), resumed, {"strategy": "mirrored", "replicas": 2})
    record = json.loads((run_dir / "run.json").read_text())
    digits = [str(c) for c in range(10)]  # the last start's data, with the data set and its class names
    assert record["data"] == {"data_dir": None, "manual_dir": None, "dataset": "mnist", "class_names": digits}
    assert record["trained"] == [
        {
            "from_epoch": 0,
            "jit": None,
            "steps_per_execution": 1,
            "deterministic": False,
            "time_budget": None,
            "augment_calls": None,
            "strategy": "default",
            "replicas": 1,
        },
        {
            "from_epoch": 2,
            "jit": True,
            "steps_per_execution": 4,
            "deterministic": True,
            "time_budget": 600.0,
            "augment_calls": None,
            "strategy": "mirrored",
            "replicas": 2,
        },
    ]


def remembering_run(tmp_path, data_dir, manual_dir):
    run_dir = tmp_path / "run"
    run_dir.mkdir(exist_ok=True)
    runinfo.record_start(run_dir, sources.Source(data_dir=data_dir, manual_dir=manual_dir), config.FAST, {})
    (run_dir / "model.keras").write_bytes(b"")
    return run_dir


def test_a_run_lends_its_data_folders_to_commands_given_the_run_or_its_model(tmp_path, monkeypatch):
    tfds_dir, archives, _ = folders(tmp_path)
    monkeypatch.chdir(tmp_path)
    run_dir = remembering_run(tmp_path, "tfds", "archives")  # relative: remembered as absolute paths
    monkeypatch.chdir(run_dir)
    notes = []
    expected = sources.Source(data_dir=tfds_dir, manual_dir=archives)
    assert runinfo.data_source(run_dir, None, None, notes.append) == expected
    assert runinfo.data_source(run_dir / "model.keras", None, None, notes.append) == expected
    assert notes == [f"reading MNIST as {run_dir} was trained: --data-dir {tfds_dir} --manual-dir {archives}"] * 2
    # A model outside any run, or no model: the options alone.
    (tmp_path / "elsewhere.keras").write_bytes(b"")
    assert runinfo.data_source(tmp_path / "elsewhere.keras", None, None) == sources.Source()
    assert runinfo.data_source(None, None, "x") == sources.Source(manual_dir=Path("x"))


def test_an_option_wins_over_what_the_run_remembers_one_folder_at_a_time(tmp_path, monkeypatch):
    tfds_dir, archives, other = folders(tmp_path)
    run_dir = remembering_run(tmp_path, tfds_dir, archives)
    assert runinfo.data_source(run_dir, other, None) == sources.Source(data_dir=other, manual_dir=archives)
    assert runinfo.data_source(run_dir, None, other) == sources.Source(data_dir=tfds_dir, manual_dir=other)
    monkeypatch.setenv(sources.MANUAL_DIR_ENV, str(other))  # the environment variable counts as given
    assert runinfo.data_source(run_dir, None, None) == sources.Source(data_dir=tfds_dir, manual_dir=other)


def test_a_remembered_folder_that_is_gone_is_left_out_with_a_note(tmp_path):
    tfds_dir, archives, _ = folders(tmp_path)
    run_dir = remembering_run(tmp_path, tfds_dir, archives)
    archives.rmdir()
    notes = []
    assert runinfo.data_source(run_dir, None, None, notes.append) == sources.Source(data_dir=tfds_dir)
    assert (
        notes[0]
        == f"{run_dir} was trained with --manual-dir {archives}, which no longer exists: reading MNIST without it"
    )
    assert notes[1] == f"reading MNIST as {run_dir} was trained: --data-dir {tfds_dir}"


def test_a_run_trained_without_data_options_or_an_unreadable_record_lends_nothing(tmp_path):
    run_dir = remembering_run(tmp_path, None, None)
    notes = []
    assert runinfo.data_source(run_dir, None, None, notes.append) == sources.Source() and notes == []
    (run_dir / "run.json").write_text('{"data": ')
    assert runinfo.data_source(run_dir, None, None, notes.append) == sources.Source()
    assert notes == [f"cannot read {run_dir / 'run.json'} (JSONDecodeError): its data folders are not used"]


def test_a_run_resumes_only_on_its_data_set_and_lends_it_to_later_commands(tmp_path):
    import pytest

    from mnist_tf.core.errors import UserError
    from mnist_tf.data import idx

    rng = np.random.default_rng(0)
    splits = {
        s: (rng.integers(0, 256, (n, 28, 28), np.uint8), np.arange(n) % 2) for s, n in (("train", 8), ("test", 4))
    }
    folder = idx.write_folder(tmp_path / "shapes", splits, ["round", "square"])
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    runinfo.record_start(run_dir, sources.Source.from_options(None, None, folder), config.FAST, {})
    data = json.loads((run_dir / "run.json").read_text())["data"]
    assert (data["dataset"], data["class_names"]) == (str(folder.absolute()), ["round", "square"])
    with pytest.raises(UserError, match=f"holds a run on {folder.absolute()}: pass --dataset"):
        runinfo.record_start(run_dir, sources.Source(), config.FAST, {})
    notes = []
    assert runinfo.data_source(run_dir, None, None, notes.append).dataset == str(folder.absolute())
    assert notes == [f"{run_dir} was trained on {folder.absolute()}: reading it (--dataset)"]
    assert runinfo.data_source(run_dir, None, None, dataset="fashion_mnist").dataset == "fashion_mnist"  # given wins
    shutil.rmtree(folder)
    with pytest.raises(UserError, match="no longer exists: pass --dataset"):
        runinfo.data_source(run_dir, None, None)
