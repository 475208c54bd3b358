"""SparK: masks, sparse features, densify/decoder structure, the masked-patch loss, reconstruction
figures' material, and the encoder export that UNet++ loads with strict=True."""

import numpy as np
import pytest
import segmentation_models_pytorch as smp
import torch
from safetensors import safe_open
from torch import nn

from depthlib.depth.encoders import drop_unused_stages, load_encoder_weights
from depthlib.depth.unetpp import DepthUNetPlusPlus
from depthlib.errors import ConfigError, DataError
from depthlib.spark.model import (
    SparK,
    kept_patch_count,
    masked_patch_loss,
    normalize_patches,
    reconstruct,
)
from depthlib.spark.sparse import SparseBatchNorm2d, SparseLayerNorm, to_dense, upsample_mask

H, W = 64, 64


def tiny(encoder="resnet18", depth=4, width=16, seed=0, **kw):
    torch.manual_seed(seed)
    return SparK(encoder, encoder_depth=depth, decoder_width=width, **kw)


@pytest.fixture(scope="module")
def model():
    return tiny()


def batch(b=2, h=H, w=W, seed=0):
    return torch.randn(b, 3, h, w, generator=torch.Generator().manual_seed(seed))


def mask_for(model, b=2, h=H, w=W, seed=0):
    return model.random_mask(b, h, w, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(
    "depth,h,w,ratio", [(4, 64, 64, 0.6), (4, 32, 64, 0.6), (5, 64, 96, 0.75), (3, 32, 48, 0.5)]
)
def test_each_image_keeps_exactly_round_n_times_one_minus_ratio_patches(depth, h, w, ratio):
    model = tiny(depth=depth, width=2**depth, mask_ratio=ratio)
    patch = 2**depth
    n = (h // patch) * (w // patch)
    mask = model.random_mask(5, h, w, generator=torch.Generator().manual_seed(1))
    assert mask.shape == (5, 1, h // patch, w // patch) and mask.dtype == torch.bool
    assert mask.sum(dim=(1, 2, 3)).tolist() == [kept_patch_count(n, ratio)] * 5
    assert kept_patch_count(16, 0.6) == 6  # round(6.4), by hand
    torch.manual_seed(7)  # a mask drawn by forward is the model's random_mask from the global RNG
    loss, _ = model(batch(5, h, w), mask=None)
    torch.manual_seed(7)
    assert torch.equal(loss, model(batch(5, h, w), model.random_mask(5, h, w))[0])


@pytest.mark.parametrize("encoder", ["resnet18", "tu-convnext_atto"])
def test_encoder_features_are_exactly_zero_at_masked_positions(encoder):
    model = tiny(encoder)
    x, mask = batch(), mask_for(tiny(encoder))
    features = model.features(x, mask)
    assert len(features) == 5  # input, strides 2, 4, 8, 16
    checked = 0
    for feature in features[2:]:
        visible = upsample_mask(mask, feature.shape[-2:]).expand_as(feature)
        assert torch.count_nonzero(feature[~visible]) == 0
        assert torch.count_nonzero(feature[visible]) > 0.5 * visible.sum()
        checked += 1
    assert checked == 3
    if encoder == "resnet18":  # the stem's stride-2 feature is sparse as well
        stem = features[1]
        assert torch.count_nonzero(stem[~upsample_mask(mask, stem.shape[-2:]).expand_as(stem)]) == 0


def test_convnext_spark_forward_backward_with_layernorm_densify():
    model = tiny("tu-convnext_atto")
    x, mask = batch(), mask_for(model)
    loss, prediction = model(x, mask)
    loss.backward()
    assert torch.isfinite(loss) and prediction.shape == x.shape
    assert all(isinstance(n, SparseLayerNorm) for n in model.densify.norms)
    assert model.densify.mask_tokens[0].grad is not None


def test_densify_and_decoder_follow_spark(model):
    # depth 4: skips at strides 16, 8, 4 (deepest first); widths halve from 16
    assert model.feature_indices == [4, 3, 2]
    assert model.decoder.widths == [16, 8, 4, 2, 1]
    assert all(isinstance(n, SparseBatchNorm2d) for n in model.densify.norms)
    kernels = [p.kernel_size for p in model.densify.projections]
    assert kernels == [(1, 1), (3, 3), (3, 3)]
    assert [p.out_channels for p in model.densify.projections] == [16, 8, 4]
    assert [p.in_channels for p in model.densify.projections] == [256, 128, 64]
    tokens = torch.cat([t.detach().flatten() for t in model.densify.mask_tokens])
    assert 0.01 < float(tokens.std()) < 0.03 and float(tokens.abs().max()) <= 0.04
    assert len(model.decoder.blocks) == 4
    block = model.decoder.blocks[0]
    up = block.up
    assert isinstance(up, nn.ConvTranspose2d)
    assert (up.kernel_size, up.stride, up.padding) == ((4, 4), (2, 2), (1, 1))
    kinds = [type(m).__name__ for m in block.conv]
    assert kinds == ["Conv2d", "BatchNorm2d", "ReLU6", "Conv2d", "BatchNorm2d"]
    assert model.decoder.head.out_channels == 3 and model.decoder.head.kernel_size == (1, 1)


def test_densify_puts_the_mask_token_at_hidden_sites_and_features_at_visible_ones(model):
    # a densify that swapped the two (token where the image is visible) must fail here
    x, mask = batch(), mask_for(model)
    filled = []
    hooks = [
        p.register_forward_hook(lambda m, i, o: filled.append(i[0]))
        for p in model.densify.projections
    ]
    try:
        with torch.no_grad():
            model.eval()
            features = model.features(x, mask)
            with model.sparse_ctx.active(mask):
                model.densify([features[k] for k in model.feature_indices])
    finally:
        model.train()
        for h in hooks:
            h.remove()
    for f, token in zip(filled, model.densify.mask_tokens, strict=True):
        seen = upsample_mask(mask, f.shape[-2:]).expand_as(f)
        assert torch.equal(f[~seen], token.expand_as(f)[~seen])  # every hidden site: the token
        assert not torch.isclose(f[seen], token.expand_as(f)[seen]).any()  # visible: features


def test_loss_ignores_visible_patches_and_uses_masked_ones(model):
    x, mask = batch(), mask_for(model)
    pred = torch.randn_like(x)
    base = masked_patch_loss(pred, x, mask, model.patch)
    visible = upsample_mask(mask, x.shape[-2:]).expand_as(x)
    changed = pred + 5.0 * visible * torch.randn_like(x)
    assert not torch.equal(changed, pred)
    assert torch.equal(masked_patch_loss(changed, x, mask, model.patch), base)
    hidden_change = pred + 5.0 * (~visible) * torch.randn_like(x)
    assert masked_patch_loss(hidden_change, x, mask, model.patch) > base + 1.0


def test_gradient_reaches_the_prediction_only_on_masked_patches(model):
    x, mask = batch(), mask_for(model)
    pred = torch.randn_like(x, requires_grad=True)
    masked_patch_loss(pred, x, mask, model.patch).backward()
    visible = upsample_mask(mask, x.shape[-2:]).expand_as(x)
    assert torch.count_nonzero(pred.grad[visible]) == 0
    assert torch.count_nonzero(pred.grad[~visible]) == (~visible).sum()


def test_per_patch_normalised_loss_matches_a_hand_computation():
    rng = np.random.default_rng(3)
    p, b, h, w = 4, 2, 8, 12
    target = rng.normal(2.0, 3.0, size=(b, 3, h, w))
    pred = rng.normal(size=(b, 3, h, w))
    mask = rng.random((b, 1, h // p, w // p)) < 0.5
    mask[0, 0, 0, 0], mask[0, 0, 0, 1] = True, False  # at least one of each
    total, count = 0.0, 0
    for i in range(b):
        for r in range(h // p):
            for c in range(w // p):
                if mask[i, 0, r, c]:
                    continue
                t = target[i, :, r * p : (r + 1) * p, c * p : (c + 1) * p]
                y = pred[i, :, r * p : (r + 1) * p, c * p : (c + 1) * p]
                goal = (t - t.mean()) / np.sqrt(t.var(ddof=1) + 1e-6)
                total += ((y - goal) ** 2).mean()
                count += 1
    got = masked_patch_loss(
        torch.from_numpy(pred), torch.from_numpy(target), torch.from_numpy(mask), p
    )
    assert float(got) == pytest.approx(total / count, rel=1e-10)


def test_normalize_patches_gives_zero_mean_unit_std_and_keeps_flat_patches_finite():
    x = torch.randn(2, 5, 48, dtype=torch.float64) * 7 + 3
    x[0, 0] = 1.5  # a flat patch: std = sqrt(eps), no division by zero
    normed, mean, std = normalize_patches(x)
    assert torch.allclose(normed[1].mean(-1), torch.zeros(5, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(normed[1].std(-1), torch.ones(5, dtype=torch.float64), atol=1e-6)
    assert torch.equal(normed[0, 0], torch.zeros(48, dtype=torch.float64))
    assert torch.allclose(normed * std + mean, x)


def test_reconstruct_composes_input_and_prediction(model):
    x = torch.randint(0, 256, (2, 3, H, W), dtype=torch.uint8)
    mask = mask_for(model)
    model.train()
    before = model.densify.norms[0].running_mean.clone()
    out = reconstruct(model, x, mask)
    assert model.training and torch.equal(model.densify.norms[0].running_mean, before)
    assert set(out) == {"input", "masked", "prediction", "composite", "mask", "loss"}
    pixels = out["mask"].expand_as(out["input"])
    assert torch.allclose(out["input"], x.float() / 255, atol=1e-5)
    assert torch.equal(out["composite"][pixels], out["input"][pixels])
    assert torch.equal(out["composite"][~pixels], out["prediction"][~pixels])
    assert torch.count_nonzero(out["masked"][~pixels]) == 0
    for key in ("input", "prediction", "composite"):
        assert out[key].min() >= 0 and out[key].max() <= 1


def test_export_has_smp_keys_and_loads_strictly_into_unetplusplus(tmp_path, model):
    trained = tiny(seed=1)
    opt = torch.optim.SGD(trained.parameters(), lr=0.1)
    loss, _ = trained(batch(), mask_for(trained))
    loss.backward()
    opt.step()  # weights (and BN running stats) no longer at any init
    path = trained.export_encoder(tmp_path / "encoder.safetensors")
    net = smp.UnetPlusPlus(
        encoder_name="resnet18", encoder_weights=None, encoder_depth=4, decoder_channels=(16,) * 4
    )
    assert drop_unused_stages(net.encoder, 4) == ("layer4.",)  # smp builds layer4 it never runs
    with safe_open(str(path), framework="pt") as f:
        keys = set(f.keys())
        assert f.metadata()["encoder"] == "resnet18"
    trained_keys = {k for k in keys if not k.startswith("layer4.")}  # layer4: smp's init, untrained
    assert trained_keys == set(net.encoder.state_dict()) and keys != trained_keys
    report = load_encoder_weights(net.encoder, path, strict=True)
    assert report.ok and not report.missing and not report.unexpected
    ours = trained.encoder.state_dict()
    for key, value in net.encoder.state_dict().items():
        assert torch.equal(value, ours[key]), key
    depth_model = DepthUNetPlusPlus("resnet18", 4, (16, 8, 8, 8), encoder_weights=path)
    assert torch.equal(depth_model.encoder.conv1.weight, ours["conv1.weight"])
    dense = to_dense(trained.encoder)
    assert type(dense.conv1) is nn.Conv2d and type(trained.encoder.conv1) is not nn.Conv2d


def test_convnext_export_loads_strictly_into_unetplusplus(tmp_path):
    model = tiny("tu-convnext_atto")
    path = model.export_encoder(tmp_path / "enc.safetensors")
    net = smp.UnetPlusPlus(
        encoder_name="tu-convnext_atto",
        encoder_weights=None,
        encoder_depth=4,
        decoder_channels=(16,) * 4,
    )
    assert load_encoder_weights(net.encoder, path, strict=True).ok


def test_from_config_rebuilds_the_architecture(model):
    again = SparK.from_config(model.config)
    assert again.config == model.config
    assert {k: v.shape for k, v in again.state_dict().items()} == {
        k: v.shape for k, v in model.state_dict().items()
    }
    with pytest.raises(ConfigError, match="Unknown SparK config"):
        SparK.from_config({**model.config, "colour": 1})


def test_bad_settings_and_inputs_are_refused(model):
    with pytest.raises(ConfigError, match="Unknown encoder"):
        SparK("resnet1800")
    with pytest.raises(ConfigError, match="encoder_depth"):
        SparK("resnet18", encoder_depth=6)
    with pytest.raises(ConfigError, match="mask_ratio"):
        SparK("resnet18", mask_ratio=1.0)
    with pytest.raises(ConfigError, match="decoder_width"):
        SparK("resnet18", encoder_depth=5, decoder_width=16)
    with pytest.raises(DataError, match="multiple of the patch size 16"):
        model(batch(h=40))
    with pytest.raises(DataError, match="float images"):
        model(torch.zeros(2, 3, H, W, dtype=torch.uint8))
    # the mask is checked once, where it enters the model
    with pytest.raises(
        DataError, match=r"must be a bool tensor \(2, 1, 4, 4\).*got torch.bool \(3,"
    ):
        model(batch(), mask_for(model, b=3))
    with pytest.raises(DataError, match="got torch.float32"):
        model.features(batch(), mask_for(model).float())
    with pytest.raises(DataError, match=r"got torch.bool \(2, 4, 4\)"):
        model(batch(), mask_for(model)[:, 0])
    with pytest.raises(
        DataError, match=r"got torch.bool \(2, 1, 2, 2\)"
    ):  # a grid of 32-px patches
        model(batch(), torch.ones(2, 1, 2, 2, dtype=torch.bool))
