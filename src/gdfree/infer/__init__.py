"""Inference: the verified trained model (weights + validated model.json), sampled predictions (MC dropout,
flips, ensembles) and the ONNX Runtime path. Predicting a dataset (lesion tables, BIDS derivatives) is
:mod:`gdfree.predict`; the forward pass over a whole volume is :mod:`gdfree.models.forward`."""

from gdfree.infer.model import TrainedModel

__all__ = ["TrainedModel"]
