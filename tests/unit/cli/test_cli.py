"""The CLI end to end on mock MNIST, and every bad input it must refuse cleanly."""

import json
import shutil

import numpy as np
import pytest
from helpers import QUICK, assert_one_line_error, is_png, run, sha256

from mnist_tf import __version__


def test_version_and_help():
    assert __version__ in run("--version").output
    result = run("--help")
    assert result.exit_code == 0
    for command in ("train", "evaluate"):
        assert command in result.output


def test_train_help_gives_the_presets_own_values():
    from mnist_tf import config

    help_text = " ".join(run("train", "--help").output.split())
    validation = ", ".join(f"{name} {cfg.validation_examples}" for name, cfg in config.PRESETS.items())
    assert f"[preset's: {validation}]" in help_text
    assert f"[preset's: {config.DEFAULT.seed}]" in help_text  # every preset has the same seed


@pytest.fixture
def finished_run(tmp_path, mock_mnist):
    run_dir = tmp_path / "run"
    result = run("train", *QUICK, "--run-dir", run_dir)
    assert result.exit_code == 0, result.output
    (tmp_path / "train-output.txt").write_text(result.output)  # beside the run, for the tests that read it
    return run_dir


def test_train_writes_every_artefact(finished_run):
    for name in ("model.keras", "calibration.json", "metrics.json", "config.json", "history.csv"):
        assert (finished_run / name).is_file(), name
    assert any((finished_run / "logs").rglob("events.out.tfevents.*"))
    assert is_png(finished_run / "learning_curves.png")
    metrics = json.loads((finished_run / "metrics.json").read_text())
    assert 0.0 <= metrics["test_accuracy"] <= 1.0 and metrics["test_loss"] > 0
    assert metrics["epochs"] == 2 and metrics["train_seconds"] > 0
    assert metrics["config"]["epochs"] == 2 and metrics["config"]["batch_size"] == 16
    assert len((finished_run / "history.csv").read_text().splitlines()) == 1 + 2
    assert not (finished_run / "backup").exists()  # a finished run keeps no resume state


def test_train_calibrates_and_says_so_in_one_line(finished_run):
    from mnist_tf.evaluation import calibration
    from mnist_tf.inference.loading import load_logits_fn, load_proba_fn

    fitted = json.loads((finished_run / "calibration.json").read_text())
    # The `fast` preset holds no validation split and trains on every image: the last ones, trained on.
    assert fitted["fitted_on"] == "mnist train[55000:]" and fitted["held_out"] is False
    assert fitted["examples"] == 48  # mock data: every split has 48 images
    assert fitted["nll_after"] <= fitted["nll_before"] + 1e-12
    recorded = json.loads((finished_run / "metrics.json").read_text())["calibration"]
    assert recorded["temperature"] == fitted["temperature"] and recorded["held_out"] is False
    line = next(x for x in (finished_run.parent / "train-output.txt").read_text().splitlines() if "calibration" in x)
    assert line == (
        f"calibration: temperature {fitted['temperature']:.2f} on 48 training images (none held out); "
        f"test expected calibration error {recorded['test_ece_before']:.1%} -> {recorded['test_ece_after']:.1%}"
    )
    # The run's model answers with the calibrated probabilities: those of its logits divided by T.
    images = np.random.default_rng(0).integers(0, 256, (3, 28, 28, 1), np.uint8)
    logits = np.asarray(load_logits_fn(finished_run)(images))
    np.testing.assert_allclose(
        load_proba_fn(finished_run)(images), calibration.softmax(logits, fitted["temperature"]), atol=1e-5
    )


def test_evaluate_records_the_temperature_of_the_model(finished_run, mock_mnist, tmp_path):
    out = tmp_path / "report"
    (finished_run / "calibration.json").write_text(json.dumps({"temperature": 0.5}))
    result = run("evaluate", "--model", finished_run, "--out", out)
    assert result.exit_code == 0, result.output
    assert json.loads((out / "metrics.json").read_text())["temperature"] == 0.5
    assert "temperature 0.5)" in result.output
    (finished_run / "calibration.json").write_text('{"temperature": "hot"}')
    assert_one_line_error(run("evaluate", "--model", finished_run, "--out", out), "calibration.json", "temperature")


def test_finished_run_is_never_overwritten_without_the_flag(finished_run, mock_mnist):
    before = sha256(finished_run / "model.keras")
    assert_one_line_error(run("train", *QUICK, "--run-dir", finished_run), "finished run", "--overwrite")
    assert sha256(finished_run / "model.keras") == before
    result = run("train", *QUICK, "--epochs", "1", "--run-dir", finished_run, "--overwrite")
    assert result.exit_code == 0, result.output
    assert json.loads((finished_run / "metrics.json").read_text())["epochs"] == 1


def test_evaluate_writes_reports(finished_run, mock_mnist, tmp_path):
    out = tmp_path / "report"
    result = run("evaluate", "--model", finished_run, "--out", out)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "metrics.json").read_text())
    assert report["examples"] == 48 and sum(map(sum, report["confusion_matrix"])) == 48
    assert len(report["per_class"]) == 10
    assert is_png(out / "confusion_matrix.png") and is_png(out / "misclassified.png")
    assert "precision" in result.output and "test accuracy" in result.output
    assert not (out / "person_made.json").exists() and "person-made" not in result.output  # only with --person-made


@pytest.mark.slow  # exports a SavedModel and writes every set: most of a minute
def test_evaluate_person_made_scores_every_set_by_both_paths(finished_run, mock_mnist, tmp_path):
    out = tmp_path / "report"
    result = run("evaluate", "--model", finished_run, "--out", out, "--person-made", "--person-made-examples", "4")
    assert result.exit_code == 0, result.output
    report = json.loads((out / "person_made.json").read_text())
    from mnist_tf.data.person_made import SETS

    assert set(report["predict"]) == set(SETS) == set(report["serving_bytes"])
    for kind in SETS:
        files = sorted((out / "person_made" / "sets" / kind).iterdir())
        assert len(files) == 4 and all(f.stat().st_size > 0 for f in files)
        assert report["predict"][kind]["examples"] == 4 and 0 <= report["predict"][kind]["accuracy"] <= 1
        # The same files through two paths that share one preprocessing give the same answers.
        assert report["predict"][kind] == report["serving_bytes"][kind]
    assert "serving_bytes" in result.output and "canvas" in result.output


def test_predict_show_draws_what_the_model_saw(finished_run, tmp_path):
    from PIL import Image

    digit = tmp_path / "digit.png"
    canvas = np.full((300, 400), 250, np.uint8)
    canvas[50:200, 100:120] = 20
    Image.fromarray(canvas).save(digit)
    (tmp_path / "notes.png").write_text("not a picture")
    show = tmp_path / "seen.png"
    result = run("predict", "--model", finished_run, "--show", show, digit, tmp_path / "notes.png")
    assert result.exit_code == 1  # one file could not be classified
    assert is_png(show) and f"wrote {show}" in result.output
    assert_one_line_error(
        run("predict", "--model", finished_run, "--show", tmp_path / "seen.jpg", digit), "--show", ".png"
    )


@pytest.mark.parametrize(
    "args, words",
    [
        (["--epochs", "0"], ["--epochs", "0"]),
        (["--batch-size", "-4"], ["--batch-size"]),
        (["--preset", "huge"], ["huge", "default"]),
        (["--learning-rate", "0"], ["--learning-rate"]),
        (["--train-examples", "60001"], ["train examples"]),
        (["--validation-examples", "60000"], ["--validation-examples", "60000"]),
        (["--seed", "-1"], ["--seed"]),
        # Conflicting options: 20,000 training examples cannot fit beside 50,000 held out.
        (["--validation-examples", "50000", "--train-examples", "20000"], ["train examples must be in 1..10000"]),
    ],
    ids=[
        "epochs-0",
        "batch-size-negative",
        "unknown-preset",
        "learning-rate-0",
        "train-examples-too-many",
        "validation-examples-too-many",
        "seed-negative",
        "train-and-validation-conflict",
    ],
)
def test_invalid_train_options_are_usage_errors(args, words, tmp_path):
    result = run("train", *args, "--run-dir", tmp_path / "run")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert all(w in result.output for w in words), result.output
    assert not (tmp_path / "run").exists()


def test_train_sets_any_config_field_with_set(tmp_path, mock_mnist):
    import keras

    run_dir = tmp_path / "run"
    sets = ["optimizer=sgd", "stages=[[8],[16]]", "dense_units=[32]", "epochs=2", "schedule=constant"]
    result = run("train", *QUICK, *(a for s in sets for a in ("--set", s)), "--run-dir", run_dir)
    assert result.exit_code == 0, result.output
    saved = json.loads((run_dir / "config.json").read_text())
    assert (saved["optimizer"], saved["stages"], saved["dense_units"]) == ("sgd", [[8], [16]], [32])
    assert (saved["epochs"], saved["batch_size"], saved["schedule"]) == (2, 16, "constant")  # options and --set
    model = keras.models.load_model(run_dir / "model.keras")
    assert [layer.filters for layer in model.layers if isinstance(layer, keras.layers.Conv2D)] == [8, 16]
    assert [layer.units for layer in model.layers if isinstance(layer, keras.layers.Dense)] == [32, 10]


@pytest.mark.parametrize(
    "args, words",
    [
        (
            ["--set", "colour=red"],
            ["--set colour=red", "no config field 'colour'", "stages, first_stride, dense_units"],
        ),
        (["--set", "stages=[32]"], ["--set stages=[32]", "stages takes a JSON list of lists of whole numbers"]),
        (["--set", "epochs=two"], ["--set epochs=two", "epochs takes a whole number"]),
        (["--set", "dropout=1"], ["--set dropout=1", "dropout must be in [0, 1)"]),
        (["--set", "epochs"], ["--set epochs", "FIELD=VALUE"]),
        (["--epochs", "3", "--set", "epochs=4"], ["--epochs and --set epochs=4 disagree"]),
        (["--no-augment", "--set", "augment=true"], ["--augment and --set augment=true disagree"]),
        (["--jit", "off", "--set", "jit=none"], ["--jit and --set jit=none disagree"]),
    ],
    ids=[
        "unknown-field",
        "wrong-shape",
        "wrong-type",
        "fails-validation",
        "no-value",
        "option-conflict",
        "flag-conflict",
        "jit-conflict",
    ],
)
def test_bad_set_is_one_error_line_before_any_work(args, words, tmp_path):
    assert_one_line_error(run("train", *args, "--run-dir", tmp_path / "run"), *words)
    assert not (tmp_path / "run").exists()


def test_run_dir_that_is_a_file_or_unwritable(tmp_path, mock_mnist):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert_one_line_error(run("train", *QUICK, "--run-dir", blocker), "--run-dir")
    assert_one_line_error(run("train", *QUICK, "--run-dir", blocker / "sub"), "cannot write", "--run-dir")
    assert blocker.read_text() == "not a folder"


def test_run_dir_holding_other_files_is_refused(tmp_path, mock_mnist):
    (tmp_path / "notes.txt").write_text("mine")
    assert_one_line_error(run("train", *QUICK, "--run-dir", tmp_path, "--overwrite"), "no mnist-tf run")
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_evaluate_refuses_missing_and_non_model_paths(tmp_path):
    assert_one_line_error(run("evaluate", "--model", tmp_path / "nope.keras"), "does not exist")
    (tmp_path / "empty").mkdir()
    assert_one_line_error(run("evaluate", "--model", tmp_path / "empty"), "neither model.keras")
    fake = tmp_path / "model.keras"
    fake.write_bytes(b"this is not a zip archive")
    assert_one_line_error(run("evaluate", "--model", fake), "not a readable Keras model")


def test_unfinished_run_with_other_options_is_refused_not_mixed(tmp_path):
    from mnist_tf import config

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    config.FAST.replace(epochs=2, batch_size=16).save(run_dir / "config.json")  # as QUICK left it
    before = sha256(run_dir / "config.json")
    result = run("train", *QUICK, "--epochs", "3", "--learning-rate", "0.01", "--jit", "on", "--run-dir", run_dir)
    # Only what makes the run what it is is named: --jit may change on a resume.
    assert_one_line_error(result, "different config (epochs, learning_rate)", "same options to resume", "--overwrite")
    assert sha256(run_dir / "config.json") == before
    assert sorted(p.name for p in run_dir.iterdir()) == [".lock", "config.json"]  # the lock stays, released


def test_an_interrupted_run_resumes_with_other_runtime_settings(tmp_path, mock_mnist, monkeypatch):
    from mnist_tf.training import resume

    run_dir = tmp_path / "run"
    save = resume.ResumeState.on_epoch_end

    def stop_after_saving(self, epoch, logs=None):
        save(self, epoch, logs)
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(resume.ResumeState, "on_epoch_end", stop_after_saving)
        stopped = run("train", *QUICK, "--run-dir", run_dir)
    assert stopped.exit_code == 130 and "Re-run the same command to resume" in stopped.output
    result = run("train", *QUICK, "--jit", "off", "--set", "steps_per_execution=2", "--run-dir", run_dir)
    assert result.exit_code == 0, result.output
    assert "Resuming with other runtime settings (jit: null -> false, steps_per_execution: 1 -> 2)" in result.output
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert (metrics["epochs"], metrics["resumed_after_epoch"], metrics["config"]["steps_per_execution"]) == (2, 1, 2)
    trained = json.loads((run_dir / "run.json").read_text())["trained"]
    assert [(t["from_epoch"], t["jit"], t["steps_per_execution"]) for t in trained] == [(0, None, 1), (1, False, 2)]


def test_benchmark_given_a_run_reads_mnist_where_it_was_trained(tmp_path, tiny_keras, monkeypatch):
    from mnist_tf import benchmark, config
    from mnist_tf.data import sources
    from mnist_tf.training import runinfo

    run_dir, archives = tmp_path / "run", tmp_path / "archives"
    archives.mkdir()
    shutil.copytree(tiny_keras.parent, run_dir)
    runinfo.record_start(run_dir, sources.Source(manual_dir=archives), config.FAST, {})
    monkeypatch.delenv(sources.MANUAL_DIR_ENV, raising=False)
    given = []
    monkeypatch.setattr(benchmark, "run_benchmark", lambda out, source, *args, **kwargs: given.append(source) or {})
    monkeypatch.setattr(benchmark, "tables", lambda result: "")
    result = run("benchmark", "--part", "inference", "--model", run_dir, "--out", tmp_path / "bench")
    assert result.exit_code == 0, result.output
    assert given == [sources.Source(manual_dir=archives)]
    assert f"note: reading MNIST as {run_dir} was trained: --manual-dir {archives}" in result.output
    other = tmp_path / "other"
    other.mkdir()
    result = run(
        "benchmark", "--part", "inference", "--model", run_dir, "--out", tmp_path / "b2", "--manual-dir", other
    )
    assert result.exit_code == 0 and given[-1] == sources.Source(manual_dir=other)  # an explicit option wins


@pytest.mark.parametrize(
    "args, words",
    [
        (["--calibration-examples", "0"], ["--calibration-examples"]),
        (["--max-accuracy-drop", "101"], ["--max-accuracy-drop"]),
        (["--version", "0"], ["--version"]),
        (["--tflite-kind", "int4"], ["int4", "float32"]),
    ],
    ids=["calibration-examples-0", "max-accuracy-drop-101", "version-0", "unknown-tflite-kind"],
)
def test_invalid_export_options_are_usage_errors(args, words, tiny_keras, tmp_path):
    result = run("export", "--model", tiny_keras, "--out", tmp_path / "out", *args)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert all(w in result.output for w in words), result.output
    assert not (tmp_path / "out").exists()


def test_export_refuses_an_existing_version_before_any_work(tiny_keras, tiny_saved_model):
    out = tiny_saved_model.parents[2]  # OUT/saved_model/mnist/1
    before = sha256(tiny_saved_model / "saved_model.pb")
    result = run("export", "--model", tiny_keras, "--out", out, "--version", "1")
    assert_one_line_error(result, "version 1 already exists", "omit --version")
    assert sha256(tiny_saved_model / "saved_model.pb") == before


def model_that_is_something_else(path, kind, tiny_keras, tiny_saved_model):
    import tensorflow as tf

    if kind == "folder-of-other-files":
        path.mkdir()
        (path / "notes.txt").write_text("not a model")
    elif kind == "folder-of-versions":
        shutil.copytree(tiny_saved_model, path / "1")
    elif kind == "broken-saved-model":
        path.mkdir()
        (path / "saved_model.pb").write_bytes(b"not a protobuf")
    elif kind == "other-saved-model":
        module = tf.Module()
        module.double = tf.function(lambda x: {"y": 2 * x}, input_signature=[tf.TensorSpec([None], tf.float32)])
        tf.saved_model.save(module, str(path), signatures={"serving_default": module.double})
    elif kind == "fake-tflite":
        path.write_bytes(b"TFL3 but not really a flatbuffer")
    elif kind == "other-format":
        path.write_bytes(b"\x08\x07")
    elif kind == "truncated-keras":
        path.write_bytes(tiny_keras.read_bytes()[: tiny_keras.stat().st_size // 2])


@pytest.mark.parametrize(
    "kind, name, words",
    [
        ("folder-of-other-files", "stuff", ["neither model.keras nor saved_model.pb", "pass a run dir"]),
        ("folder-of-versions", "mnist", ["holds SavedModel versions [1]", "pass one version folder"]),
        ("broken-saved-model", "sm", ["is not a readable SavedModel", "written by mnist-tf export"]),
        ("other-saved-model", "sm", ["has no serving_default signature with an 'image' input"]),
        ("fake-tflite", "model.tflite", ["is not a TFLite model", "pass a .tflite written by mnist-tf export"]),
        ("other-format", "model.onnx", ["is not a model format mnist-tf reads"]),
        ("truncated-keras", "model.keras", ["is not a readable Keras model", "written by mnist-tf train"]),
    ],
    ids=[
        "folder-of-other-files",
        "folder-of-versions",
        "broken-saved-model",
        "other-saved-model",
        "fake-tflite",
        "other-format",
        "truncated-keras",
    ],
)
def test_model_paths_holding_something_else_are_refused(tmp_path, tiny_keras, tiny_saved_model, kind, name, words):
    from PIL import Image

    model = tmp_path / name
    model_that_is_something_else(model, kind, tiny_keras, tiny_saved_model)
    image = tmp_path / "digit.png"
    Image.new("L", (28, 28)).save(image)
    assert_one_line_error(run("predict", "--model", model, image), *words)


@pytest.mark.parametrize("precision", ["bfloat16", "float16"])
def test_train_with_mixed_precision_records_it_and_evaluates(tmp_path, mock_mnist, precision):
    run_dir = tmp_path / "run"
    result = run("train", *QUICK, "--mixed-precision", precision, "--run-dir", run_dir)
    assert result.exit_code == 0, result.output
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["config"]["mixed_precision"] == precision
    assert 0.0 <= metrics["test_accuracy"] <= 1.0
    evaluation = run("evaluate", "--model", run_dir)
    assert evaluation.exit_code == 0, evaluation.output


def test_benchmark_refuses_to_overwrite_an_earlier_benchmark(tmp_path):
    (tmp_path / "benchmark.json").write_text("{}")
    assert_one_line_error(run("benchmark", "--out", tmp_path, "--part", "peak"), "--overwrite")
    assert (tmp_path / "benchmark.json").read_text() == "{}"


def test_benchmark_model_must_be_a_keras_model(tmp_path):
    saved_model = tmp_path / "1"
    saved_model.mkdir()
    (saved_model / "saved_model.pb").write_bytes(b"")
    result = run("benchmark", "--out", tmp_path / "bench", "--part", "inference", "--model", saved_model)
    assert_one_line_error(result, "not a Keras model", "--model")
    assert_one_line_error(run("benchmark", "--part", "inference", "--model", tmp_path / "none"), "does not exist")
    assert not (tmp_path / "bench").exists()
