"""The UNet++ depth model, its any-size predict, config round trip and encoder weight files."""

import json
import os
import pickle

import numpy as np
import pytest
import segmentation_models_pytorch as smp
import segmentation_models_pytorch.encoders as smp_encoders
import torch

import depthlib.depth.unetpp as models
from depthlib.data.transforms import normalize
from depthlib.depth.encoders import load_encoder_weights, save_encoder_weights
from depthlib.depth.unetpp import DepthUNetPlusPlus
from depthlib.errors import CheckpointError, ConfigError, DataError
from depthlib.weights import load_weights, read_weights, save_weights

TINY = {"decoder_channels": (16, 16, 8, 8, 8), "min_depth": 0.5, "max_depth": 8.0}


def tiny_model(seed=0, encoder="resnet18", **kw):
    torch.manual_seed(seed)
    return DepthUNetPlusPlus(encoder, **{**TINY, **kw})


@pytest.fixture(scope="module")
def model():
    return tiny_model()


def test_forward_shape_and_depth_range(model):
    x = torch.randn(2, 3, 64, 64)
    y = model(x)
    assert y.shape == (2, 1, 64, 64)
    assert (y > 0.5).all() and (y <= 8.0).all()


def test_head_stays_in_the_half_open_range_even_when_saturated(model):
    depth = model.logits_to_depth(torch.tensor([-1e4, -50.0, 0.0, 50.0, 1e4]))
    assert (depth > 0.5).all() and (depth <= 8.0).all()
    assert depth[2].item() == pytest.approx(0.5 + 7.5 / 2)


def test_forward_refuses_sizes_off_the_stride(model):
    with pytest.raises(DataError, match="predict"):
        model(torch.randn(1, 3, 40, 64))


def test_predict_any_size_numpy_and_tensor(model):
    rgb = np.random.default_rng(0).integers(0, 256, size=(37, 53, 3), dtype=np.uint8)
    depth = model.predict(rgb)
    assert isinstance(depth, np.ndarray) and depth.shape == (37, 53) and depth.dtype == np.float32
    assert (depth > 0.5).all() and (depth <= 8.0).all()
    batch = torch.rand(2, 3, 37, 53)
    assert model.predict(batch).shape == (2, 1, 37, 53)
    assert model.predict(batch[0]).shape == (1, 37, 53)
    assert model.predict(np.zeros((2, 5, 7, 3), np.uint8)).shape == (2, 5, 7)  # pad > size


class EchoFirstChannel(DepthUNetPlusPlus):
    """forward returns the normalised input's first channel: an output that depends on position,
    so predict must hand back exactly the input's channel, read at the right offset."""

    def forward(self, x):
        self.seen = x.clone()
        return x[:, :1]


@pytest.mark.parametrize(
    ("size", "mode"),
    [((37, 53), "reflect"), ((64, 45), "reflect"), ((10, 12), "replicate")],  # pad >= size
)
def test_predict_crops_the_padding_at_its_true_offset(size, mode):
    echo = EchoFirstChannel("resnet18", decoder_channels=(8,) * 5)
    h, w = size
    rgb = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (2, 3, h, w), dtype=np.uint8))
    x = normalize(rgb.float() / 255.0)
    out = echo.predict(rgb)
    assert out.shape == (2, 1, h, w) and torch.equal(out, x[:, :1])
    ph, pw = (-h) % 32, (-w) % 32
    padded = torch.nn.functional.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2), mode=mode)
    assert echo.seen.shape[-2:] == (h + ph, w + pw) and torch.equal(echo.seen, padded)
    single = echo.predict(rgb[0].permute(1, 2, 0).numpy())  # the numpy (H, W, 3) path
    np.testing.assert_array_equal(single, x[0, 0].numpy())


def test_predict_equals_forward_when_no_padding_and_restores_mode():
    model = tiny_model(1)
    model.train()
    rgb = torch.rand(1, 3, 64, 96)
    out = model.predict(rgb)
    assert model.training  # left as found
    model.eval()
    with torch.no_grad():
        expected = model(normalize(rgb))
    assert torch.allclose(out, expected, atol=1e-6)
    uint8 = (rgb * 255).round().to(torch.uint8)
    assert torch.allclose(model.predict(uint8), model.predict(uint8.float() / 255), atol=1e-6)


def test_predict_rejects_bad_images(model):
    with pytest.raises(DataError, match="RGB"):
        model.predict(np.zeros((32, 32), np.uint8))
    with pytest.raises(DataError, match="0-255"):
        model.predict(torch.full((1, 3, 32, 32), 200.0))
    with pytest.raises(DataError, match="tensor"):
        model.predict(torch.zeros(1, 4, 32, 32))


def test_config_round_trip_rebuilds_the_same_network(model):
    cfg = json.loads(json.dumps(model.config))  # as a checkpoint would store it
    assert cfg == {
        "encoder": "resnet18",
        "encoder_depth": 5,
        "decoder_channels": [16, 16, 8, 8, 8],
        "min_depth": 0.5,
        "max_depth": 8.0,
    }
    rebuilt = DepthUNetPlusPlus.from_config(cfg)
    rebuilt.load_state_dict(model.state_dict())
    x = torch.randn(1, 3, 64, 64)
    model.eval(), rebuilt.eval()
    with torch.no_grad():
        assert torch.equal(model(x), rebuilt(x))
    assert "encoder.conv1.weight" in model.state_dict()  # smp's own UnetPlusPlus keys
    with pytest.raises(ConfigError, match=r"Unknown UNet\+\+ config"):
        DepthUNetPlusPlus.from_config({**cfg, "learning_rate": 1e-3})


def test_encoder_depth_four_uses_stride_16():
    m = tiny_model(encoder_depth=4, decoder_channels=(16, 8, 8, 8))
    assert m.stride == 16 and m(torch.randn(1, 3, 48, 32)).shape == (1, 1, 48, 32)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"encoder": "resnet1000"}, "Unknown encoder"),
        ({"decoder_channels": (16, 8)}, "decoder_channels"),
        ({"min_depth": 0.0}, "min_depth"),
        ({"encoder_depth": 7}, "encoder_depth"),
        ({"encoder_weights": True}, "encoder_weights"),
    ],
)
def test_bad_config_is_a_config_error(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        DepthUNetPlusPlus(**{**TINY, **kwargs})


def test_convnext_encoder_from_timm():
    m = tiny_model(encoder="tu-convnext_atto")
    assert m(torch.randn(1, 3, 64, 64)).shape == (1, 1, 64, 64)


def test_encoder_export_import_round_trip(tmp_path):
    source, target = tiny_model(1), tiny_model(2)
    path = save_encoder_weights(source, tmp_path / "enc.safetensors")
    keys = set(load_weights(path))
    assert {"conv1.weight", "layer1.0.conv1.weight", "bn1.running_mean"} <= keys
    assert keys == set(source.encoder.state_dict())
    report = load_encoder_weights(target, path)
    assert report.ok and len(report.loaded) == len(keys)
    for k, v in source.encoder.state_dict().items():
        assert torch.equal(v, target.encoder.state_dict()[k]), k
    assert not torch.equal(
        source.decoder.state_dict()["blocks.x_0_0.conv1.0.weight"],
        target.decoder.state_dict()["blocks.x_0_0.conv1.0.weight"],
    )
    rebuilt = DepthUNetPlusPlus(**TINY, encoder_weights=path)  # a file as encoder_weights
    assert torch.equal(rebuilt.encoder.conv1.weight, source.encoder.conv1.weight)


def test_whole_smp_model_file_with_encoder_prefix_loads(tmp_path, model):
    path = save_weights(tmp_path / "smp_model.safetensors", model.state_dict())
    target = tiny_model(3)
    report = load_encoder_weights(target, path, strict=False)
    assert report.ok and len(report.loaded) == len(model.encoder.state_dict())
    assert "decoder.blocks.x_0_0.conv1.0.weight" in report.ignored
    assert torch.equal(target.encoder.conv1.weight, model.encoder.conv1.weight)
    assert load_encoder_weights(target, path).ok  # strict: the decoder keys are not an error


def test_other_encoder_file_fails_with_named_keys(tmp_path):
    convnext = tiny_model(encoder="tu-convnext_atto")
    path = save_encoder_weights(convnext, tmp_path / "convnext.safetensors")
    target = tiny_model()
    before = target.encoder.conv1.weight.clone()
    with pytest.raises(CheckpointError) as err:
        load_encoder_weights(target, path)
    msg = str(err.value)
    assert "missing key(s): bn1.bias" in msg and "unexpected key(s): model.stages_0" in msg
    assert "more)" in msg  # first few keys + counts, not hundreds of names
    assert "tu-convnext_atto encoder but the model uses resnet18" in msg
    assert torch.equal(target.encoder.conv1.weight, before)  # strict failure loads nothing


def test_deeper_resnet_file_reports_extra_keys_and_non_strict_loads_the_rest(tmp_path):
    r34 = DepthUNetPlusPlus("resnet34", **TINY)
    path = save_encoder_weights(r34.encoder, tmp_path / "r34.safetensors")  # a bare encoder
    target = tiny_model()
    with pytest.raises(CheckpointError, match=r"unexpected key\(s\): layer1\.2\.bn1\.bias") as err:
        load_encoder_weights(target, path)
    assert "another encoder" in str(err.value)  # no metadata → the generic likely cause
    report = load_encoder_weights(target, path, strict=False)
    assert not report.ok and not report.missing and report.loaded
    assert torch.equal(target.encoder.layer1[0].conv1.weight, r34.encoder.layer1[0].conv1.weight)


def test_shape_mismatch_is_reported(tmp_path, model):
    state = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    state["conv1.weight"] = torch.zeros(32, 3, 7, 7)
    path = save_weights(tmp_path / "odd.safetensors", state)
    with pytest.raises(CheckpointError, match=r"conv1\.weight: file \(32, 3, 7, 7\) vs model \(64"):
        load_encoder_weights(tiny_model(), path)


@pytest.mark.parametrize("encoder", ["resnet18", "tu-efficientnet_lite0"])
def test_a_trimmed_export_loads_strictly_into_smps_own_model_and_back(tmp_path, encoder):
    torch.manual_seed(0)
    ours = DepthUNetPlusPlus(encoder, 4, (16, 8, 8, 8))
    rng = torch.get_rng_state()
    path = save_encoder_weights(ours, tmp_path / "enc.safetensors")
    assert torch.equal(torch.get_rng_state(), rng)  # the untrained stages use a seed of their own
    torch.manual_seed(1)
    net = smp.UnetPlusPlus(
        encoder, encoder_depth=4, encoder_weights=None, decoder_channels=(8,) * 4
    )
    net.encoder.load_state_dict(load_weights(path), strict=True)  # plain torch, strict
    for key, value in ours.encoder.state_dict().items():
        assert torch.equal(net.encoder.state_dict()[key], value), key
    dropped = ours.encoder.unused_prefixes
    assert read_weights(path)[1]["untrained"] == " ".join(dropped)
    assert load_encoder_weights(net, path).ok  # our loader agrees: smp never runs those stages
    back = DepthUNetPlusPlus(encoder, 4, (16, 8, 8, 8))  # the reverse: smp's weights into ours
    report = load_encoder_weights(back, net.state_dict())
    assert (
        report.ok
        and report.ignored
        and all(k.startswith(dropped) or not k.startswith("encoder.") for k in report.ignored)
    )
    assert torch.equal(
        back.encoder.state_dict()[report.loaded[0]], net.encoder.state_dict()[report.loaded[0]]
    )
    deeper = DepthUNetPlusPlus(encoder, 5, (16, 8, 8, 8, 8))  # it would run the untrained stages
    with pytest.raises(CheckpointError, match="missing key"):
        load_encoder_weights(deeper, path)
    report = load_encoder_weights(deeper, path, strict=False)
    assert report.missing and all(k.startswith(dropped) for k in report.missing)


class _Exploit:
    def __reduce__(self):
        return (os.mkdir, (self.target,))


def test_pickle_files_are_refused_never_unpickled(tmp_path, model):
    pt = tmp_path / "encoder.pt"
    torch.save(model.encoder.state_dict(), pt)
    with pytest.raises(CheckpointError, match="is a pickle.*never unpickles weights"):
        load_encoder_weights(model, pt)
    exploit = _Exploit()
    exploit.target = str(tmp_path / "pwned")
    evil = tmp_path / "evil.safetensors"
    evil.write_bytes(pickle.dumps(exploit))
    with pytest.raises(CheckpointError, match="never unpickles"):
        load_encoder_weights(model, evil)
    assert not (tmp_path / "pwned").exists()
    with pytest.raises(CheckpointError, match="No weight file"):
        load_encoder_weights(model, tmp_path / "nope.safetensors")
    with pytest.raises(ConfigError, match="or a mapping of names to tensors"):
        load_encoder_weights(model, ["encoder.safetensors"])


def test_imagenet_weights_offline_fail_fast(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(models, "_hub_reachable", lambda: pytest.fail("must not touch network"))
    with pytest.raises(CheckpointError) as err:
        DepthUNetPlusPlus(**TINY, encoder_weights="imagenet")
    msg = str(err.value)
    assert "need network access" in msg
    assert "--encoder-weights FILE" in msg and "random" in msg
    assert "tu-efficientnet_lite0 (installed)" in msg  # what works offline instead


def test_imagenet_weights_without_network_fail_fast(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(models, "_hub_reachable", lambda: False)
    with pytest.raises(CheckpointError, match="not reachable"):
        DepthUNetPlusPlus(**TINY, encoder_weights="imagenet")


def test_imagenet_download_errors_are_wrapped(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("connection reset")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(models, "_hub_reachable", lambda: True)
    monkeypatch.setattr(smp_encoders, "hf_hub_download", refuse)
    with pytest.raises(CheckpointError, match="connection reset.*--encoder-weights FILE"):
        DepthUNetPlusPlus(**TINY, encoder_weights="imagenet")
