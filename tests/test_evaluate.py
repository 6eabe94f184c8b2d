"""`evaluate.evaluate_model`, the job of `mnist-tf evaluate`: the report folder it writes, and where."""

import json
import shutil

import pytest

from mnist_tf import evaluate
from mnist_tf.errors import UserError


def test_evaluate_model_writes_its_report_beside_the_model_by_default(tiny_keras, mock_mnist, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    shutil.copyfile(tiny_keras, run_dir / "model.keras")
    report = evaluate.evaluate_model(run_dir, mock_mnist)
    assert report.model == run_dir / "model.keras" and report.out == run_dir / "evaluation"
    assert sorted(p.name for p in report.out.iterdir()) == ["confusion_matrix.png", "metrics.json", "misclassified.png"]
    written = json.loads((report.out / "metrics.json").read_text())
    assert written["model"] == str(report.model) and written["examples"] == len(report.evaluation.labels) == 48
    assert written["accuracy"] == report.evaluation.accuracy and report.person_made is None


def test_evaluate_model_refuses_a_report_folder_it_cannot_create(tiny_keras, mock_mnist, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(UserError, match="cannot create report folder .*: pass a writable --out"):
        evaluate.evaluate_model(tiny_keras, mock_mnist, blocker / "report")
    assert blocker.read_text() == "not a folder"
