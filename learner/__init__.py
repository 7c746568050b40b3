"""The system under test: period windows, models, strategies, evaluation, metrics."""
