"""Scores of probabilities against labels (`metrics`) and every figure the project draws (`plots`)."""
