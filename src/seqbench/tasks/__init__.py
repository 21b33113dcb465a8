"""LightningModules, one per task (``conf/task/<name>.yaml``)."""
