"""Model storage: the embedded default models, the model registry, and the atomic-write, lock
and JSON helpers both use."""
