"""Networks (built from MONAI blocks) and their safetensors + JSON checkpoints."""

from gdfree.models.checkpoint import load_model, save_model
from gdfree.models.unet import MODELS, MultitaskUNet, build_model

__all__ = ["MODELS", "MultitaskUNet", "build_model", "load_model", "save_model"]
