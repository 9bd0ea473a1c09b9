"""MC dropout samples that share one encoder pass equal full passes after the same seed, and still differ."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gdfree.infer.sampling import dropout_layers, sample_predictions
from gdfree.models.forward import predict_volume_samples
from gdfree.models.unet import MultitaskUNet


@pytest.mark.parametrize("strides", [(2, 2), (2, 2, 2)])
def test_shared_encoder_samples_equal_full_passes(strides: tuple[int, ...]):
    torch.manual_seed(0)
    channels = (4, 8, 16)[: len(strides) + (len(strides) == 2)]
    net = MultitaskUNet(2, ("enhancing", "lesion"), channels=channels, strides=strides, full_res_channels=4,
                        dropout=0.3).eval()  # fmt: skip
    x = torch.randn(1, 2, 16, 16, 16)
    assert torch.allclose(net(x), net.decode(x, net.encode(x)))
    image = np.random.default_rng(1).normal(size=(2, 19, 17, 16)).astype(np.float32)
    fast = sample_predictions([net], image, mc=4, seed=7, temperatures=[(1.5, 0.8)])
    slow = sample_predictions([net], image, mc=4, seed=7, temperatures=[(1.5, 0.8)], cheap=False)
    assert fast.shape == (4, 2, 19, 17, 16) and np.allclose(fast, slow, atol=1e-6)
    assert not np.allclose(fast[0], fast[1])  # the samples still differ
    flipped_fast = sample_predictions([net], image, mc=2, flips=True, seed=3)
    flipped_slow = sample_predictions([net], image, mc=2, flips=True, seed=3, cheap=False)
    assert flipped_fast.shape[0] == 16 and np.allclose(flipped_fast, flipped_slow, atol=1e-6)
    assert not net.training and all(not m.training for m in net.modules())


def test_the_shared_path_stands_aside_when_it_cannot_apply():
    net = MultitaskUNet(1, ("enhancing",), channels=(4, 8), strides=(2, 2), full_res_channels=4, dropout=0.3)
    image = np.zeros((1, 16, 16, 16), np.float32)
    assert predict_volume_samples(net, image, 2, max_whole_voxels=100) is None  # would be tiled
    net.encoder.append(torch.nn.Dropout3d(0.5).train())  # dropout in the encoder: no shared encoding
    assert predict_volume_samples(net, image, 2) is None


@pytest.mark.parametrize("strides", [(2, 2), (2,)])
def test_last_layer_samples_equal_full_passes_with_only_that_layer_sampling(strides: tuple[int, ...]):
    torch.manual_seed(0)
    net = MultitaskUNet(2, ("enhancing", "lesion"), channels=(4, 8), strides=strides, full_res_channels=4,
                        dropout=0.3).eval()  # fmt: skip
    image = np.random.default_rng(2).normal(size=(2, 19, 17, 16)).astype(np.float32)
    calls = []
    hooks = [m.register_forward_hook(lambda mod, _i, _o: calls.append(mod)) for m in (net.encoder[0], net.up[0])]
    fast = sample_predictions([net], image, mc=5, seed=4, mc_layers="last")
    assert len(calls) == 2  # the encoder and the decoder up to the last dropout ran once for the 5 samples
    for hook in hooks:
        hook.remove()
    slow = sample_predictions([net], image, mc=5, seed=4, mc_layers="last", cheap=False)
    assert np.allclose(fast, slow, atol=1e-6) and not np.allclose(fast[0], fast[1])
    every = sample_predictions([net], image, mc=5, seed=4)
    if len(dropout_layers(net)) > 1:  # with one dropout layer both are the same estimate
        assert not np.allclose(every, fast)
    with pytest.raises(ValueError, match="mc_layers"):
        sample_predictions([net], image, mc=2, mc_layers="first")
