"""Training into the model registry: data (``training_data``), the classifier's Ray Train driver
(``train``, its config ``train_config``) and worker (``train_worker``), the linear probe
(``linear_probe``), reports (``report``), LoRA adapters of the generators (``lora``, ``lora_tasks``,
``lora_worker``), what both Ray Train pipelines share (``runs``: the local Ray, the trainer run, a
worker's start-up, the command's ``main``), and the background training of a service's first
versions (``background_training``)."""
