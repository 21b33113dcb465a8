"""Corpora as HF ``datasets.DatasetDict`` (splits ``train``/``validation``/``test``, column ``text``)
and the datamodules that batch them for each task."""
