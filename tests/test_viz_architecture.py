"""Architecture diagrams drawn from the real SparK and UNet++ models."""

import matplotlib.pyplot as plt
import pytest
import torch

from depthlib.data.transforms import normalize
from depthlib.depth.unetpp import DepthUNetPlusPlus
from depthlib.errors import DataError
from depthlib.spark.model import SparK, reconstruct
from depthlib.viz import save_figure
from depthlib.viz.spark_architecture import plot_spark_architecture
from depthlib.viz.unetpp_architecture import plot_unetpp_architecture, unetpp_nodes


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def texts(fig) -> set[str]:
    return {t.get_text() for ax in fig.axes for t in ax.texts}


def shape(t) -> str:
    c, h, w = t.shape[-3:]
    return f"{c}×{h}×{w}"


@pytest.mark.parametrize("depth", [4, 5])
def test_spark_figure_writes_the_measured_shapes(depth, tmp_path):
    torch.manual_seed(0)
    model = SparK("resnet18", encoder_depth=depth, decoder_width=32)
    h, w = 2 * model.patch, 3 * model.patch
    image = torch.randint(0, 256, (1, 3, h, w), dtype=torch.uint8)
    mask = model.random_mask(1, h, w, generator=torch.Generator().manual_seed(3))
    fig = plot_spark_architecture(model, image, mask)
    written = texts(fig)
    features = model.features(image.float() / 255.0, mask)  # shapes do not depend on the values
    for k in model.feature_indices:
        assert shape(features[k]) in written
    assert f"stage {depth} · stride {model.patch}" in written  # stage s = stride 2**s
    widths = model.decoder.widths
    for i in range(depth):  # block i outputs widths[i + 1] channels at stride patch / 2**(i+1)
        scale = model.patch // 2 ** (i + 1)
        assert f"block {i + 1}: up ×2\n{widths[i + 1]}×{h // scale}×{w // scale}" in written
    loss = float(reconstruct(model, image, mask)["loss"])
    assert any(f"= {loss:.3f}" in t for t in written)
    assert save_figure(fig, "spark", tmp_path).stat().st_size > 10_000


def test_spark_figure_without_an_image_uses_placeholders():
    model = SparK("resnet18", encoder_depth=4, decoder_width=32)
    fig = plot_spark_architecture(model)
    written = texts(fig)
    assert "input image (placeholder)\n3×32×48" in written
    assert "64×8×12" in written and "256×2×3" in written
    assert not any(t.startswith("masked patches only =") for t in written)


def test_spark_figure_takes_float_rgb_or_normalised_input():
    model = SparK("resnet18", encoder_depth=4, decoder_width=32)
    rgb = torch.rand(3, 32, 48, generator=torch.Generator().manual_seed(0))
    mask = model.random_mask(1, 32, 48, generator=torch.Generator().manual_seed(1))
    loss = float(reconstruct(model, normalize(rgb[None]), mask)["loss"])
    for fig in (
        plot_spark_architecture(model, rgb, mask[0]),
        plot_spark_architecture(model, normalize(rgb[None]), mask, normalized=True),
    ):
        assert f"masked patches only = {loss:.3f}\n(grey: visible, ignored)" in texts(fig)
    with pytest.raises(DataError, match="normalized=True"):
        plot_spark_architecture(model, normalize(rgb[None]) * 3, mask)


def test_spark_figure_rejects_bad_images():
    model = SparK("resnet18", encoder_depth=4, decoder_width=32)
    with pytest.raises(DataError, match="multiple of the patch size 16"):
        plot_spark_architecture(model, torch.zeros(3, 30, 48))
    with pytest.raises(DataError, match="one RGB image"):
        plot_spark_architecture(model, torch.zeros(1, 1, 32, 48))


def expected_nodes(model, size):
    """X^{i,j} by UNet++'s definition: level i has stride 2**(i+1); the last node of a level
    (i + j = D - 1) has the decoder width, the others the encoder width of that level."""
    depth = model.config["encoder_depth"]
    enc, dec = model.encoder.out_channels, model.config["decoder_channels"]
    out = {}
    for i in range(depth):
        for j in range(depth - i):
            c = dec[depth - 2 - i] if j > 0 and i + j == depth - 1 else enc[i + 1]
            out[(i, j)] = (c, size[0] // 2 ** (i + 1), size[1] // 2 ** (i + 1))
    return out


@pytest.mark.parametrize("depth", [4, 5])
def test_unetpp_figure_matches_the_model(depth):
    decoder = [48, 40, 24, 16, 8][:depth]
    model = DepthUNetPlusPlus("resnet18", encoder_depth=depth, decoder_channels=decoder)
    size = (64, 96)
    nodes = expected_nodes(model, size)
    assert unetpp_nodes(model, size) == nodes
    written = texts(plot_unetpp_architecture(model, size))
    for (i, j), (c, h, w) in nodes.items():
        assert f"$X^{{{i},{j}}}$\n{c} ch · {h}×{w}" in written
    assert f"final up ×2\n{decoder[-1]}×64×96" in written
    assert "head: conv 3×3\n→ depth 1×64×96" in written
    assert len([t for t in written if t.startswith("$X^")]) == depth * (depth + 1) // 2


def test_unetpp_figure_rejects_sizes_off_the_stride():
    model = DepthUNetPlusPlus("resnet18", encoder_depth=5, decoder_channels=[32, 16, 16, 8, 8])
    with pytest.raises(DataError, match="multiple of the encoder stride 32"):
        plot_unetpp_architecture(model, (48, 96))
