"""An ONNX Runtime engine for the network: export once, then run where torch would.

:class:`OnnxNetwork` exports a trained network (eval mode, dynamic batch and spatial axes, opset 17, the
TorchScript-based exporter: ``dynamo=False`` needs no onnxscript) into a temporary file, loads it into an
ONNX Runtime CPU session and is called like the module on (B, C, X, Y, Z) tensors, so
:func:`gdfree.models.forward.predict_volume`, the sliding window and test-time flips use it unchanged. ONNX
Runtime's graph optimisation folds dropout away, so it runs only deterministic passes: asking for train mode
(MC dropout) raises; MC dropout stays on the torch engine.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from gdfree.models.forward import fov_independent

__all__ = ["ENGINES", "OnnxNetwork"]

ENGINES = ("torch", "onnx")


class OnnxNetwork:
    """A network exported to ONNX and run by ONNX Runtime on the CPU.

    Args:
        network: the torch module (its ``divisor`` is kept); exported in eval mode, left as it was.
        in_channels: input channels.
        threads: ONNX Runtime intra-op threads (0: its default, all cores).
    """

    def __init__(self, network: nn.Module, in_channels: int, threads: int = 0) -> None:
        import onnxruntime as ort

        self.divisor = int(getattr(network, "divisor", 1))
        self.fov_independent = fov_independent(network)
        was_training = network.training
        network.eval()
        example = torch.zeros(1, in_channels, *(2 * max(self.divisor, 8),) * 3)  # deepest level 2^3 or more
        with tempfile.TemporaryDirectory(prefix="gdfree-onnx-") as tmp:
            path = Path(tmp) / "network.onnx"
            with warnings.catch_warnings():  # instance norm's export notes; nothing to act on
                warnings.simplefilter("ignore")
                torch.onnx.export(network.cpu(), (example,), str(path), input_names=["x"], output_names=["logits"],
                                  dynamic_axes={"x": {0: "b", 2: "x", 3: "y", 4: "z"}}, opset_version=17,
                                  dynamo=False)  # fmt: skip
            self.model_bytes = path.read_bytes()
        network.train(was_training)
        options = ort.SessionOptions()
        if threads > 0:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(self.model_bytes, options, providers=["CPUExecutionProvider"])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        array = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        return torch.from_numpy(self.session.run(None, {"x": array})[0])

    def eval(self) -> OnnxNetwork:
        return self

    def train(self, mode: bool = True) -> OnnxNetwork:
        if mode:
            raise ValueError("MC dropout is not available on the ONNX engine (ONNX Runtime removes dropout); "
                             "use --engine torch for --mc")  # fmt: skip
        return self
