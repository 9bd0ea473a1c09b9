"""Model checkpoints: weights in safetensors (no pickle) and everything else in a JSON beside them.

``model.json`` holds the class name and keyword arguments (the network is rebuilt from them), the head
names, input modalities, normalisation, decision threshold, resolved training config and training-data
fingerprints, and the SHA-256 of the weights file. The weights file carries the architecture, heads and
modalities in its own safetensors header, so the hash covers them: a ``model.json`` whose heads or inputs
were reordered or edited no longer matches its weights and is refused on load. Both files are written
atomically.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gdfree.io.images import atomic_path, file_sha256
from gdfree.io.tables import read_json
from gdfree.models.record import ModelRecord
from gdfree.models.unet import build_model

__all__ = ["load_model", "save_model"]

def save_model(
    folder: Path | str, model: nn.Module, meta: ModelRecord | Mapping[str, Any], stem: str = "model"
) -> Path:
    """Write ``<stem>.safetensors`` and ``<stem>.json`` into ``folder``; returns the JSON path.

    ``meta`` is the model's :class:`~gdfree.models.record.ModelRecord` (a mapping is read through it: it must
    hold ``architecture`` ({"class", "kwargs"}), ``heads``, ``modalities``, ``normalisation`` and
    ``threshold``); the SHA-256 of the weights file is recorded as ``weights_sha256``.
    """
    from safetensors.torch import save_file

    record = meta if isinstance(meta, ModelRecord) else ModelRecord.from_json(meta, "model metadata")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / f"{stem}.safetensors"
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    # one key: safetensors writes its metadata map in no fixed order, and the file's hash must be stable
    header = {"gdfree": json.dumps(record.bound(), sort_keys=True)}
    with atomic_path(weights) as tmp:
        save_file(state, str(tmp), metadata=header)
    return replace(record, weights_sha256=file_sha256(weights)).write(folder / f"{stem}.json")


def load_model(folder: Path | str, device: str | torch.device = "cpu", stem: str = "model") -> tuple[nn.Module, dict]:
    """Rebuild the network of a run folder and load its verified weights onto ``device`` (eval mode).

    The weights file must have the SHA-256 that ``model.json`` records, and the architecture, heads and
    modalities in its header must equal those of ``model.json`` (files saved before the header existed
    are checked by hash alone).

    Raises:
        FileNotFoundError: the folder or one of the two files is missing.
        ValueError: the JSON is not a gdfree model description, the weights' hash or header does not match
            it, or the weights do not fit the network.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    folder = Path(folder)
    meta_path, weights = folder / f"{stem}.json", folder / f"{stem}.safetensors"
    for path in (meta_path, weights):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: not found (is {folder} a gdfree training run?)")
    meta = read_json(meta_path)
    record = ModelRecord.from_json(meta, meta_path)  # every field checked for its type
    if record.weights_sha256 is None:
        raise ValueError(f"{meta_path}: lacks weights_sha256; not a gdfree model description")
    digest = file_sha256(weights)
    if digest != meta["weights_sha256"]:
        raise ValueError(f"{weights}: SHA-256 {digest} differs from the {meta['weights_sha256']} recorded in "
                         f"{meta_path.name}; the weights were changed or corrupted after training")  # fmt: skip
    arch = record.architecture
    try:
        with safe_open(str(weights), framework="pt") as fh:
            bound = json.loads((fh.metadata() or {}).get("gdfree", "{}"))
        for key, stored in bound.items():
            if stored != meta.get(key):
                raise ValueError(f"{meta_path}: {key} {meta.get(key)!r} differ from the {stored!r} the weights were "
                                 "saved with; model.json was edited after training")  # fmt: skip
        model = build_model(arch["class"], arch["kwargs"])
        model.load_state_dict(load_file(str(weights), device=str(device)))
    except ValueError:
        raise
    except Exception as exc:  # safetensors and torch raise several types for a bad file
        raise ValueError(f"{weights}: weights do not fit {arch['class']}{arch['kwargs']} ({exc})") from exc
    return model.to(device).eval(), meta
