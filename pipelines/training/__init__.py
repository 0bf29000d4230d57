"""Training into the model registry: data (``training_data``), the Ray Train driver (``train``)
and worker (``train_worker``), the linear probe (``linear_probe``), reports (``report``), and the
background training of a service's first versions (``background_training``)."""
