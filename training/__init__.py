"""SageMaker-style training entry points that also run locally (see training/train.py)."""
