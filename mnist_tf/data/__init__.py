"""The data: MNIST from TFDS (`sources`), `tf.data` pipelines (`pipeline`), augmentation (`augment`) and the
person-made picture sets (`person_made`)."""
