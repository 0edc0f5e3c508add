"""Evaluation of a trained model against exact ground truth: the standard metric of every task
(``metrics``), the decoding of generated images back into predictions (``decode``), a classical detector of
the shapes world (``detect``) and the suites that score a pipeline on held-out cases (``suites``)."""
