"""Inference: whole-volume or tiled prediction, lesion tables, BIDS-derivative outputs."""

from gdfree.infer.predict import lesion_rows, predict_dataset, predict_volume

__all__ = ["lesion_rows", "predict_dataset", "predict_volume"]
