"""`evaluate.evaluate_model`, the job of `mnist-tf evaluate`: the report folder it writes, and where."""

import json
import shutil

import pytest

from mnist_tf.core.errors import UserError
from mnist_tf.jobs import evaluate


def test_evaluate_model_writes_its_report_beside_the_model_by_default(tiny_keras, mock_mnist, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    shutil.copyfile(tiny_keras, run_dir / "model.keras")
    report = evaluate.evaluate_model(run_dir, mock_mnist)
    assert report.model == run_dir / "model.keras" and report.out == run_dir / "evaluation"
    assert sorted(p.name for p in report.out.iterdir()) == [
        "confusion_matrix.png",
        "metrics.json",
        "misclassified.png",
        "reliability.png",
    ]
    written = json.loads((report.out / "metrics.json").read_text())
    assert written["model"] == str(report.model) and written["examples"] == len(report.evaluation.labels) == 48
    assert written["accuracy"] == report.evaluation.accuracy and report.person_made is None
    assert len(written["reliability"]) == 15 and sum(b["count"] for b in written["reliability"]) == 48
    assert 0 <= written["expected_calibration_error"] <= 1
    assert written["temperature"] == report.temperature == 1.0  # no calibration.json: the plain softmax


def test_expected_calibration_error_is_the_weighted_gap_between_confidence_and_accuracy():
    import numpy as np

    from mnist_tf.evaluation.metrics import expected_calibration_error, reliability

    labels = np.array([0, 0, 1, 1])
    # Two predictions at 0.95, both right; two at 0.55, one right: |1 - 0.95| / 2 + |0.5 - 0.55| / 2 = 0.05.
    probabilities = np.array([[0.95, 0.05], [0.95, 0.05], [0.45, 0.55], [0.55, 0.45]])
    assert expected_calibration_error(probabilities, labels) == pytest.approx(0.05)
    rows = reliability(probabilities, labels)
    assert [r["count"] for r in rows if r["count"]] == [2, 2]
    # A model right exactly as often as it says is calibrated.
    assert expected_calibration_error(np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([0, 1])) == 0


def test_evaluate_model_refuses_a_report_folder_it_cannot_create(tiny_keras, mock_mnist, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(UserError, match="cannot create report folder .*: pass a writable --out"):
        evaluate.evaluate_model(tiny_keras, mock_mnist, blocker / "report")
    assert blocker.read_text() == "not a folder"


def test_evaluate_model_never_writes_into_an_export(tiny_saved_model, mock_mnist, tmp_path):
    base = tmp_path / "saved_model" / "mnist"
    shutil.copytree(tiny_saved_model, base / "1")
    before = sorted(p.relative_to(base).as_posix() for p in base.rglob("*"))
    report = evaluate.evaluate_model(base / "1", mock_mnist)
    assert report.out == tmp_path / "saved_model" / "mnist-1-evaluation"
    assert (report.out / "metrics.json").is_file()
    assert sorted(p.relative_to(base).as_posix() for p in base.rglob("*")) == before  # the served folder is as exported


def test_default_report_dir_keeps_each_model_its_own_folder(tmp_path):
    assert evaluate.default_report_dir(tmp_path / "run" / "model.keras") == tmp_path / "run" / "evaluation"
    assert (
        evaluate.default_report_dir(tmp_path / "tflite" / "mnist_int8.tflite")
        == tmp_path / "tflite" / "mnist_int8-evaluation"
    )
    assert evaluate.default_report_dir(tmp_path / "other.keras") == tmp_path / "other-evaluation"
