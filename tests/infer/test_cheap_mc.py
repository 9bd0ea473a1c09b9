"""MC dropout samples that share one encoder pass equal full passes after the same seed, and still differ."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gdfree.infer.sampling import dropout_layers, sample_predictions
from gdfree.models.forward import predict_volume, predict_volume_samples
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


@pytest.mark.parametrize("strides", [(2, 2), (2,)])
def test_head_dropout_samples_equal_full_passes_and_average_to_the_deterministic_logit(strides: tuple[int, ...]):
    torch.manual_seed(0)
    net = MultitaskUNet(2, ("enhancing", "lesion"), channels=(4, 8), strides=strides, full_res_channels=4,
                        dropout=0.3, dropout_site="head").eval()  # fmt: skip
    assert dropout_layers(net) == [net.head_dropout]  # the decoder holds none
    image = np.random.default_rng(3).normal(size=(2, 19, 17, 16)).astype(np.float32)
    calls = []
    hook = net.up[0].register_forward_hook(lambda mod, _i, _o: calls.append(mod))
    fast = sample_predictions([net], image, mc=6, seed=2, temperatures=[(1.5, 0.8)])
    assert len(calls) == 1  # the decoder ran once for the 6 samples
    hook.remove()
    slow = sample_predictions([net], image, mc=6, seed=2, temperatures=[(1.5, 0.8)], cheap=False)
    assert np.allclose(fast, slow, atol=1e-6) and not np.allclose(fast[0], fast[1])
    # the expectation row is the deterministic pass, flips included; a decoder-dropout model's is the sample mean
    with_expected = sample_predictions([net], image, mc=3, flips=True, seed=2, temperatures=[(1.5, 0.8)],
                                       expectation=True)  # fmt: skip
    plain = sample_predictions([net], image, flips=True, temperatures=[(1.5, 0.8)])
    assert with_expected.shape[0] == 8 * 3 + 1 and np.allclose(with_expected[-1], plain.mean(axis=0), atol=1e-6)
    decoder = MultitaskUNet(2, ("enhancing", "lesion"), channels=(4, 8), strides=strides, full_res_channels=4,
                            dropout=0.3).eval()  # fmt: skip
    rows = sample_predictions([decoder], image, mc=3, seed=2, expectation=True)
    assert np.allclose(rows[-1], rows[:-1].mean(axis=0), atol=1e-6)
    # the head is linear after the dropout, so the mean sample logit is the deterministic logit (1/(1-p) scaling)
    net.head_dropout.train()
    torch.manual_seed(0)
    logits = predict_volume_samples(net, image, 2000, temperature=1.0)
    net.eval()
    assert logits is not None
    mean_logit = np.mean([np.log(p / (1 - p)) for p in logits], axis=0)
    deterministic = predict_volume(net, image, logits_only=True)
    spread = np.std([np.log(p / (1 - p)) for p in logits], axis=0)
    assert np.all(np.abs(mean_logit - deterministic) <= 4 * spread / np.sqrt(2000) + 1e-4)


def test_head_and_decoder_dropout_share_weights_and_refuse_an_unknown_site():
    decoder = MultitaskUNet(1, ("enhancing",), channels=(4, 8), strides=(2, 2), full_res_channels=4)
    head = MultitaskUNet(1, ("enhancing",), channels=(4, 8), strides=(2, 2), full_res_channels=4,
                         dropout_site="head")  # fmt: skip
    assert head.load_state_dict(decoder.state_dict()) is not None  # same parameters, only the dropout moved
    with pytest.raises(ValueError, match="dropout_site"):
        MultitaskUNet(1, ("enhancing",), channels=(4, 8), strides=(2, 2), dropout_site="encoder")


def test_a_trained_head_dropout_model_records_its_site_and_samples_through_predict(tiny_cohort, tmp_path):
    import json

    from tests.conftest import tiny_train_config

    from gdfree.data.cases import load_array_case
    from gdfree.infer.model import TrainedModel
    from gdfree.io.adapters import discover
    from gdfree.predict.case import predict_case
    from gdfree.train import TrainConfig, train

    with pytest.raises(ValueError, match="dropout_site"):
        TrainConfig(dropout_site="encoder")
    run = tmp_path / "run"
    train(tiny_train_config(tiny_cohort, dropout_site="head", dropout=0.3), run)
    assert json.loads((run / "model.json").read_text())["architecture"]["kwargs"]["dropout_site"] == "head"
    model = TrainedModel.load(run)
    assert dropout_layers(model.network) == [model.network.head_dropout]
    case = load_array_case(discover(tiny_cohort)[0], model.modalities, normalisation=model.normalisation)
    sampled = predict_case(model, case, mc=4, seed=1)
    assert sampled["n_samples"] == 4 and sampled["uncertainty"]["enhancing"]["variance"].max() > 0
    plain = predict_case(model, case)
    # the samples' mean probability sits near the deterministic one (the mean logit equals it exactly)
    assert np.abs(sampled["prob"]["lesion"] - plain["prob"]["lesion"]).mean() < 0.05
