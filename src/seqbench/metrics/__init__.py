"""Metrics beyond the training losses: quality of generated text (``metrics.generation``)."""
