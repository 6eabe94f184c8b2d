"""Exports: the SavedModel laid out for TF Serving (`saved_model`) and the verified TFLite variants with
their accuracy gate (`tflite`)."""
