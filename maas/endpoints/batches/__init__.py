"""The Batch and Files APIs: the protocol models, the rules of the input and output files
(``lines``), the operations over the stores (``api``), the file and batch stores (``store``) and the
router. The runner is the ``deployments/batch_runner.py`` deployment."""
