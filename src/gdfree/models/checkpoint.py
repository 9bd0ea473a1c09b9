"""Model checkpoints: weights in safetensors (no pickle) and everything else in a JSON beside them.

``model.json`` holds the class name and keyword arguments (the network is rebuilt from them), the head
names, input modalities, normalisation, decision threshold, resolved training config and training-data
fingerprints. Both files are written atomically.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gdfree.io.images import atomic_path, file_sha256
from gdfree.io.tables import write_json
from gdfree.models.unet import build_model

__all__ = ["load_model", "save_model"]

_REQUIRED = ("architecture", "heads", "modalities", "normalisation", "threshold")


def save_model(folder: Path | str, model: nn.Module, meta: dict[str, Any], stem: str = "model") -> Path:
    """Write ``<stem>.safetensors`` and ``<stem>.json`` into ``folder``; returns the JSON path.

    ``meta`` must hold ``architecture`` ({"class", "kwargs"}), ``heads``, ``modalities``, ``normalisation``
    and ``threshold``; the SHA-256 of the weights file is added as ``weights_sha256``.
    """
    from safetensors.torch import save_file

    missing = [k for k in _REQUIRED if k not in meta]
    if missing:
        raise ValueError(f"model metadata lacks {', '.join(missing)}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / f"{stem}.safetensors"
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(weights) as tmp:
        save_file(state, str(tmp))
    return write_json(folder / f"{stem}.json", {**meta, "weights_sha256": file_sha256(weights)})


def load_model(folder: Path | str, device: str | torch.device = "cpu", stem: str = "model") -> tuple[nn.Module, dict]:
    """Rebuild the network of a run folder and load its weights onto ``device`` (eval mode).

    Raises:
        FileNotFoundError: the folder or one of the two files is missing.
        ValueError: the JSON is not a gdfree model description, or the weights do not fit the network.
    """
    from safetensors.torch import load_file

    folder = Path(folder)
    meta_path, weights = folder / f"{stem}.json", folder / f"{stem}.safetensors"
    for path in (meta_path, weights):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: not found (is {folder} a gdfree training run?)")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{meta_path}: not valid JSON ({exc})") from exc
    missing = [k for k in _REQUIRED if k not in meta]
    if missing:
        raise ValueError(f"{meta_path}: lacks {', '.join(missing)}; not a gdfree model description")
    arch = meta["architecture"]
    model = build_model(arch["class"], arch["kwargs"])
    try:
        model.load_state_dict(load_file(str(weights), device=str(device)))
    except (RuntimeError, OSError) as exc:
        raise ValueError(f"{weights}: weights do not fit {arch['class']}{arch['kwargs']} ({exc})") from exc
    return model.to(device).eval(), meta
