"""The service endpoints: ``/v1/models``, health, metrics and the playground page."""
