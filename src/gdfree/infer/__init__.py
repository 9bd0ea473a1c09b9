"""Inference: the verified trained model, whole-volume or tiled prediction, sampled predictions (MC dropout,
flips, ensembles), lesion tables and BIDS-derivative outputs."""

from gdfree.infer.forward import predict_volume
from gdfree.infer.model import TrainedModel
from gdfree.infer.predict import lesion_rows, predict_dataset

__all__ = ["TrainedModel", "lesion_rows", "predict_dataset", "predict_volume"]
