"""Training: config, patient-level splits, masked multitask losses, the loop and its checkpoints."""

from gdfree.train.config import DatasetSpec, SplitConfig, TrainConfig
from gdfree.train.loop import train
from gdfree.train.losses import multitask_loss
from gdfree.train.splits import split_patients

__all__ = ["DatasetSpec", "SplitConfig", "TrainConfig", "multitask_loss", "split_patients", "train"]
