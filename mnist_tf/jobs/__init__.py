"""The one library call behind each command, which the CLI, the notebooks and the tests call alike:
`train.train_and_evaluate`, `evaluate.evaluate_model`, `export.export_model`, and the person-made scores
(`person_made.evaluate_person_made`). `inference.predict.predict` is `predict`'s."""
