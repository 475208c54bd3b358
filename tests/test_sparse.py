"""Sparse operators, the to_sparse rewrite and the reference submanifold convolution."""

import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from depthlib.course.masking_demo import gather_visible
from depthlib.course.sparse_reference import (
    dense_conv_macs,
    markdown_table,
    measure_sparse_vs_dense,
    sparse_conv_macs,
    submanifold_conv2d,
)
from depthlib.errors import ConfigError, DataError
from depthlib.spark.model import make_patch_mask
from depthlib.spark.sparse import (
    SparseAvgPool2d,
    SparseBatchNorm2d,
    SparseContext,
    SparseConv2d,
    SparseLayerNorm,
    SparseLinear,
    SparseMaxPool2d,
    to_dense,
    to_sparse,
    upsample_mask,
)
from depthlib.train.distributed import SyncBatchNorm2d, convert_sync_batchnorm, synced

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _masked_features(batch=2, channels=8, height=32, width=64, patch=8, ratio=0.6, seed=0):
    grid = make_patch_mask(batch, height, width, patch, ratio, seed=seed)
    x = torch.randn(batch, channels, height, width, generator=torch.Generator().manual_seed(seed))
    return x * upsample_mask(grid, (height, width)), grid


def _outside(feature, grid):
    return feature * ~upsample_mask(grid, feature.shape[-2:])


def _sparse_run(model, x, grid):
    """A model's sparse twin on the visible pixels of ``x``: ``(outputs, sparse twin, ctx)``."""
    sparse, ctx = to_sparse(model)
    with ctx.active(grid):
        return sparse(x * upsample_mask(grid, x.shape[-2:])), sparse, ctx


# --- the reference submanifold convolution ------------------------------------------------


@pytest.mark.parametrize(
    ("kernel", "stride", "dilation", "groups", "bias"),
    [(3, 1, 1, 1, True), (3, 2, 1, 1, False), (1, 2, 1, 1, True), (7, 1, 1, 8, True),
     (7, 2, 1, 1, True), (3, 1, 2, 2, False), (4, 4, 1, 1, True)],
)  # fmt: skip
def test_masked_dense_conv_equals_reference_sparse_conv(kernel, stride, dilation, groups, bias):
    torch.manual_seed(0)
    x, grid = _masked_features()
    padding = dilation * (kernel - 1) // 2
    ctx = SparseContext()
    conv = SparseConv2d(8, 16, kernel, stride, padding, dilation, groups, bias, ctx=ctx)
    with torch.no_grad(), ctx.active(grid):
        emulated = conv(x)
    reference, active = submanifold_conv2d(
        x, upsample_mask(grid, x.shape[-2:]), conv.weight, conv.bias, stride, padding, dilation,
        groups,
    )  # fmt: skip
    assert torch.equal(active, upsample_mask(grid, emulated.shape[-2:])[:, 0])
    on_active = active[:, None].expand_as(emulated)
    assert (emulated[on_active] - reference[on_active]).abs().max() <= 1e-5
    assert (emulated[~on_active] == 0).all() and (reference[~on_active] == 0).all()


def test_reference_ignores_inactive_inputs_and_matches_dense_when_all_active():
    torch.manual_seed(0)
    x, grid = _masked_features()
    mask = upsample_mask(grid, x.shape[-2:])
    weight, bias = torch.randn(4, 8, 3, 3) * 0.1, torch.randn(4)
    clean, _ = submanifold_conv2d(x, mask, weight, bias, padding=1)
    noisy, _ = submanifold_conv2d(x + 100 * ~mask, mask, weight, bias, padding=1)
    assert torch.equal(clean, noisy)  # only active neighbours contribute
    everywhere, _ = submanifold_conv2d(x, torch.ones_like(mask), weight, bias, stride=2, padding=1)
    assert torch.allclose(everywhere, F.conv2d(x, weight, bias, 2, 1), atol=1e-5)


def test_reference_refuses_non_same_padding_and_wrong_mask():
    x, grid = _masked_features()
    mask = upsample_mask(grid, x.shape[-2:])
    with pytest.raises(ConfigError, match="same"):
        submanifold_conv2d(x, mask, torch.randn(4, 8, 3, 3), padding=0)
    with pytest.raises(DataError, match="does not match"):
        submanifold_conv2d(x, grid, torch.randn(4, 8, 3, 3), padding=1)


def test_macs_scale_with_visible_fraction():
    x, grid = _masked_features(ratio=0.75)
    mask = upsample_mask(grid, x.shape[-2:])
    weight = torch.randn(16, 8, 3, 3)
    _, active = submanifold_conv2d(x, mask, weight, padding=1)
    dense = dense_conv_macs(weight, 2, (32, 64))
    assert dense == 2 * 32 * 64 * 16 * 8 * 9
    assert sparse_conv_macs(weight, active) / dense == pytest.approx(float(mask.float().mean()))


def test_measure_sparse_vs_dense_small(monkeypatch):
    import depthlib.course.sparse_reference as reference

    calls = []

    def known_times(functions, repeats):  # seconds per run: dense 4, 2, 2.4 ms; sparse 1, 1.8, 0.5
        assert repeats == 3 and [f.__name__ for f in functions] == ["masked_dense", "sparse"]
        calls.append(repeats)
        return [[0.004, 0.002, 0.0024], [0.001, 0.0018, 0.0005]]

    monkeypatch.setattr(reference, "_interleaved_times", known_times)
    rows = measure_sparse_vs_dense(8, 16, 2, (0.5, 0.75), patch=4, repeats=3, num_threads=1)
    assert [r["ratio"] for r in rows] == [0.5, 0.75] and calls == [3, 3]
    for row in rows:
        assert row["macs_fraction"] == pytest.approx(row["visible"])
        assert row["max_abs_diff"] <= 1e-5
        assert row["dense_gmacs"] == pytest.approx(2 * 16 * 16 * 8 * 8 * 9 / 1e9)  # B H W Co Ci k²
        assert row["sparse_gmacs"] == pytest.approx(row["dense_gmacs"] * row["visible"])
        # medians (not means) and minima of the runs, in milliseconds
        assert row["dense_ms"] == pytest.approx(2.4) and row["dense_ms_min"] == pytest.approx(2.0)
        assert row["sparse_ms"] == pytest.approx(1.0) and row["sparse_ms_min"] == pytest.approx(0.5)
        assert row["sparse_over_dense"] == pytest.approx(1 / 2.4)
        assert row["sparse_over_dense_min"] == pytest.approx(0.25)
    assert [r["visible"] for r in rows] == [0.5, 0.25]  # 16 patches of 4x4: 8 and 4 kept
    table = markdown_table(rows).splitlines()
    assert len(table) == 4
    assert "| 2.4 / 2.0 | 1.0 / 0.5 | 0.42 / 0.25 |" in table[2]


def test_interleaved_times_warm_up_then_alternate():
    from depthlib.course.sparse_reference import _interleaved_times

    order = []
    times = _interleaved_times((lambda: order.append("a"), lambda: order.append("b")), repeats=3)
    assert order == ["a", "b"] + ["a", "b"] * 3  # one warm-up call each, then in alternation
    assert [len(t) for t in times] == [3, 3] and all(v >= 0 for t in times for v in t)


# --- single operators ---------------------------------------------------------------------


def test_sparse_batchnorm_equals_batchnorm1d_on_visible_features():
    torch.manual_seed(0)
    ctx = SparseContext()
    sparse_bn = SparseBatchNorm2d(8, momentum=0.3, ctx=ctx)
    reference = nn.BatchNorm1d(8, momentum=0.3)
    with torch.no_grad():
        sparse_bn.weight.uniform_(0.5, 1.5)
        sparse_bn.bias.uniform_(-0.5, 0.5)
    reference.load_state_dict(sparse_bn.state_dict())
    for step in range(3):  # train mode: batch statistics and running statistics
        x, grid = _masked_features(seed=step)
        x = x + 3.0 * upsample_mask(grid, x.shape[-2:])  # visible mean far from masked zeros
        with ctx.active(grid):
            out = sparse_bn(x)
        expected = reference(gather_visible(x, grid))
        assert torch.allclose(gather_visible(out, grid), expected, atol=1e-5)
        assert (_outside(out, grid) == 0).all()
    assert torch.allclose(sparse_bn.running_mean, reference.running_mean, atol=1e-6)
    assert torch.allclose(sparse_bn.running_var, reference.running_var, atol=1e-6)
    assert int(sparse_bn.num_batches_tracked) == 3
    assert sparse_bn.running_mean.mean() > 1.0  # the masked zeros did not pull it down
    sparse_bn.eval(), reference.eval()
    x, grid = _masked_features(seed=9)
    with ctx.active(grid):
        out = sparse_bn(x)
    assert torch.allclose(gather_visible(out, grid), reference(gather_visible(x, grid)), atol=1e-5)


def test_sparse_sync_batchnorm_without_distributed_is_sparse_batchnorm():
    ctx = SparseContext()
    sync, plain = synced(SparseBatchNorm2d)(8, ctx=ctx), SparseBatchNorm2d(8, ctx=ctx)
    x, grid = _masked_features()
    with ctx.active(grid):
        assert torch.allclose(sync(x), plain(x), atol=1e-6)
    assert torch.allclose(sync.running_var, plain.running_var, atol=1e-6)


def _sync_bn_worker(rank, world, init_file, out_dir):
    """One rank of the distributed test: half the batch, compared with the full-batch reference."""
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world
    )
    try:
        x, grid = _masked_features(batch=4, seed=1)
        x = x + 2.0 * upsample_mask(grid, x.shape[-2:])
        grad_out = torch.randn(x.shape, generator=torch.Generator().manual_seed(2))
        ctx = SparseContext()
        reference, sync = SparseBatchNorm2d(8, ctx=ctx), synced(SparseBatchNorm2d)(8, ctx=ctx)
        full = x.clone().requires_grad_()
        with ctx.active(grid):
            reference_out = reference(full)
        (reference_out * grad_out).sum().backward()
        part = slice(2 * rank, 2 * rank + 2)
        mine = x[part].clone().requires_grad_()
        with ctx.active(grid[part]):  # each rank has its own half of the batch and mask
            out = sync(mine)
        (out * grad_out[part]).sum().backward()
        weight_grad = sync.weight.grad.clone()
        torch.distributed.all_reduce(weight_grad)  # what DDP sums (before averaging)
        pairs = {
            "output": (out, reference_out[part]),
            "input_grad": (mine.grad, full.grad[part]),
            "weight_grad": (weight_grad, reference.weight.grad),
            "running_mean": (sync.running_mean, reference.running_mean),
            "running_var": (sync.running_var, reference.running_var),
        }
        text = "\n".join(
            f"{key} {float((a - b).abs().max() / b.abs().max()):.3e}"  # relative to the scale
            for key, (a, b) in ((k, (a.detach(), b.detach())) for k, (a, b) in pairs.items())
        )
        Path(out_dir, f"rank{rank}.txt").write_text(text)
    finally:
        torch.distributed.destroy_process_group()


def test_sparse_sync_batchnorm_across_two_processes_equals_full_batch(tmp_path):
    torch.multiprocessing.spawn(
        _sync_bn_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2
    )
    for rank in range(2):
        for line in (tmp_path / f"rank{rank}.txt").read_text().splitlines():
            key, value = line.split()
            assert float(value) <= 1e-5, f"rank {rank}: {key} differs by {value}"


def test_sparse_layernorm_channels_first_and_last():
    torch.manual_seed(0)
    ctx = SparseContext()
    x, grid = _masked_features()
    first = SparseLayerNorm(8, eps=1e-6, data_format="channels_first", ctx=ctx)
    last = SparseLayerNorm(8, eps=1e-6, data_format="channels_last", ctx=ctx)
    with torch.no_grad():
        first.weight.uniform_(0.5, 1.5)
        first.bias.uniform_(-1, 1)
        last.load_state_dict(first.state_dict())
    expected = F.layer_norm(gather_visible(x, grid), (8,), first.weight, first.bias, 1e-6)
    with ctx.active(grid):
        out_first = first(x)
        out_last = last(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        pooled = last(torch.ones(3, 8))  # (B, C) vectors have no positions: plain LayerNorm
    for out in (out_first, out_last):
        assert torch.allclose(gather_visible(out, grid), expected, atol=1e-5)
        assert (_outside(out, grid) == 0).all()  # a dense LN would write its bias there
    assert torch.allclose(pooled, F.layer_norm(torch.ones(3, 8), (8,), last.weight, last.bias))


def test_sparse_linear_masks_channels_last_maps_only():
    ctx = SparseContext()
    linear = SparseLinear(8, 4, ctx=ctx)
    x, grid = _masked_features()
    with ctx.active(grid):
        out = linear(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        pooled = linear(torch.ones(2, 8))
    expected = gather_visible(x, grid) @ linear.weight.T + linear.bias
    assert torch.allclose(gather_visible(out, grid), expected, atol=1e-5)
    assert (_outside(out, grid) == 0).all()
    assert torch.allclose(pooled, F.linear(torch.ones(2, 8), linear.weight, linear.bias))


@pytest.mark.parametrize(
    ("sparse_cls", "dense_cls", "args"),
    [(SparseMaxPool2d, nn.MaxPool2d, (3, 2, 1)), (SparseAvgPool2d, nn.AvgPool2d, (2, 2))],
)
def test_sparse_pools_are_dense_pools_times_mask(sparse_cls, dense_cls, args):
    x, grid = _masked_features()
    ctx = SparseContext()
    with ctx.active(grid):
        out = sparse_cls(*args, ctx=ctx)(x)
    dense = dense_cls(*args)(x)
    assert torch.equal(out, dense * upsample_mask(grid, out.shape[-2:]))
    assert (_outside(out, grid) == 0).all()


# --- the rewrite ------------------------------------------------------------------------


def _smp_encoder(name):
    import segmentation_models_pytorch as smp  # a dependency: must import offline

    torch.manual_seed(0)
    return smp.encoders.get_encoder(name, weights=None)


@torch.no_grad()
def _randomize_bn_stats(model):
    """Non-trivial running statistics, so that eval mode really uses them."""
    generator = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)


@pytest.mark.parametrize("name", ["resnet18", "tu-convnext_atto"])
def test_to_sparse_keeps_keys_and_tensors_and_to_dense_restores_types(name):
    encoder = _smp_encoder(name)
    types = {n: type(m) for n, m in encoder.named_modules()}
    sparse, ctx = to_sparse(encoder)
    assert list(sparse.state_dict()) == list(encoder.state_dict())
    for a, b in zip(sparse.state_dict().values(), encoder.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert {n: type(m) for n, m in encoder.named_modules()} == types  # only the copy changed
    rewritten = [m for m in sparse.modules() if hasattr(m, "sparse_ctx")]
    assert len(rewritten) > 10 and all(m.sparse_ctx is ctx for m in rewritten)
    dense = to_dense(sparse)
    assert {n: type(m) for n, m in dense.named_modules()} == types
    assert not any(hasattr(m, "sparse_ctx") for m in dense.modules())
    encoder.load_state_dict(sparse.state_dict())  # an exported sparse encoder loads into dense


def test_to_sparse_inplace_then_synchronised_batchnorm():
    encoder = _smp_encoder("resnet18")
    sparse, _ = to_sparse(encoder, inplace=True)
    assert sparse is encoder and type(encoder.conv1) is SparseConv2d
    assert isinstance(encoder.conv1, nn.Conv2d)  # still a Conv2d for code that checks types
    n_bn = sum(type(m) is SparseBatchNorm2d for m in encoder.modules())
    assert convert_sync_batchnorm(encoder, dense=False) == n_bn > 0  # the sparse ones only
    assert type(encoder.bn1) is synced(SparseBatchNorm2d)
    assert isinstance(encoder.bn1, SyncBatchNorm2d) and isinstance(encoder.bn1, SparseBatchNorm2d)
    assert to_dense(encoder, inplace=True) is encoder
    assert type(encoder.conv1) is nn.Conv2d and type(encoder.bn1) is nn.BatchNorm2d


def _compare_all_ones(dense, train):
    """A sparse twin with nothing masked must compute exactly what the dense model computes.

    float64, so that the only differences left are rounding (float32 gives ~1e-6 relative)."""
    dense = dense.double().train(train)
    _randomize_bn_stats(dense)
    x = torch.randn(2, 3, 64, 96, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    ones = torch.ones(2, 1, 2, 3, dtype=torch.bool)
    got, sparse, _ = _sparse_run(dense, x, ones)
    expected = dense(x)
    expected = [expected] if torch.is_tensor(expected) else expected
    got = [got] if torch.is_tensor(got) else got
    for e, g in zip(expected, got, strict=True):
        assert e.shape == g.shape
        assert e.numel() == 0 or (e - g).abs().max() <= 1e-10  # smp's ConvNeXt has an empty stage
    dense_state, sparse_state = dense.state_dict(), sparse.state_dict()
    for key, value in dense_state.items():  # running statistics updated identically in train
        assert torch.allclose(value.double(), sparse_state[key].double(), atol=1e-10), key


@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("name", ["resnet18", "tu-convnext_atto"])
def test_all_ones_mask_reproduces_smp_encoder(name, train):
    _compare_all_ones(_smp_encoder(name), train)


def test_all_ones_mask_reproduces_torchvision_and_timm_models():
    import timm
    import torchvision

    torch.manual_seed(0)
    resnet = torchvision.models.resnet18(weights=None)
    _compare_all_ones(nn.Sequential(*list(resnet.children())[:-2]), True)  # without the head
    for name, kwargs in [("resnet18d", {}), ("convnext_atto", {"conv_mlp": False})]:
        model = timm.create_model(name, pretrained=False, features_only=True, **kwargs)
        _compare_all_ones(model, True)


@pytest.mark.parametrize("conv_mlp", [True, False])
def test_masked_positions_stay_exactly_zero_at_every_stage(conv_mlp):
    import timm

    torch.manual_seed(0)
    models = [
        _smp_encoder("resnet18"),
        timm.create_model("convnext_atto", pretrained=False, features_only=True, conv_mlp=conv_mlp),
    ]
    x = torch.randn(3, 3, 64, 96)
    grid = make_patch_mask(3, 64, 96, 32, 0.5, seed=4)
    for model in models:
        with torch.no_grad():  # trained-looking biases and layer scales; fresh ones are 0 / 1e-6
            for parameter in model.parameters():
                if parameter.dim() == 1:
                    parameter.uniform_(-1.0, 1.0)
        features, _, _ = _sparse_run(model.train(), x, grid)
        assert len(features) >= 4
        for stage, feature in enumerate(features):
            assert feature.numel() == 0 or (_outside(feature, grid) == 0).all(), stage
            assert feature.numel() == 0 or gather_visible(feature, grid).abs().sum() > 0, stage


def test_two_models_with_different_masks_side_by_side():
    encoder = _smp_encoder("resnet18").eval()
    (first, first_ctx), (second, second_ctx) = to_sparse(encoder), to_sparse(encoder)
    x = torch.randn(2, 3, 64, 64)
    mask_a = make_patch_mask(2, 64, 64, 32, 0.5, seed=1)
    mask_b = make_patch_mask(2, 64, 64, 32, 0.5, seed=2)
    assert not torch.equal(mask_a, mask_b)
    xa = x * upsample_mask(mask_a, (64, 64))
    xb = x * upsample_mask(mask_b, (64, 64))
    with torch.no_grad():
        with first_ctx.active(mask_a):
            alone_a = first(xa)[-1]
        with second_ctx.active(mask_b):
            alone_b = second(xb)[-1]
        # interleaved: both contexts active at once, calls alternate
        with first_ctx.active(mask_a), second_ctx.active(mask_b):
            a1, b1 = first.conv1(xa), second.conv1(xb)
            a, b = first(xa)[-1], second(xb)[-1]
    assert torch.equal(a, alone_a) and torch.equal(b, alone_b)
    assert (_outside(a1, mask_a) == 0).all() and (_outside(b1, mask_b) == 0).all()
    assert (_outside(a, mask_a) == 0).all() and (_outside(b, mask_b) == 0).all()
    assert not torch.equal(a, b)
    assert first_ctx.mask is None and second_ctx.mask is None  # contexts restored on exit


# --- failing loudly -----------------------------------------------------------------------


def test_sparse_module_without_mask_raises():
    sparse, ctx = to_sparse(_smp_encoder("resnet18"))
    with pytest.raises(ConfigError, match=r"SparseConv2d ran without a mask"):
        sparse(torch.randn(1, 3, 64, 64))
    with pytest.raises(ConfigError, match="SparseConv2d ran without a mask"):
        SparseConv2d(3, 4, 3)(torch.randn(1, 3, 8, 8))  # built without a context


def test_mask_grid_that_does_not_divide_a_feature_map_raises():
    x = torch.randn(2, 3, 64, 64)
    with pytest.raises(DataError, match="mask grid 3x3 does not divide the size 64x64"):
        _sparse_run(_smp_encoder("resnet18"), x, torch.ones(2, 1, 3, 3, dtype=torch.bool))
    with pytest.raises(DataError, match="mask grid 4x4 does not divide the size 2x2"):  # layer4
        _sparse_run(_smp_encoder("resnet18"), x, torch.ones(2, 1, 4, 4, dtype=torch.bool))


def test_to_sparse_lists_unknown_modules():
    import torchvision

    with pytest.raises(ConfigError) as error:
        to_sparse(torchvision.models.resnet18(weights=None))
    assert "avgpool (AdaptiveAvgPool2d)" in str(error.value)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.GroupNorm(2, 8), nn.Sigmoid())
    with pytest.raises(ConfigError) as error:
        to_sparse(model)
    assert "1 (GroupNorm)" in str(error.value) and "2 (Sigmoid)" in str(error.value)
    assert "0 (Conv2d)" not in str(error.value)
    sparse, _ = to_sparse(model, allow=(nn.GroupNorm, nn.Sigmoid))  # the user vouches for them
    assert type(sparse[0]) is SparseConv2d and type(sparse[1]) is nn.GroupNorm


def test_to_sparse_refuses_attention_and_already_sparse_models():
    import timm

    with pytest.raises(ConfigError, match=r"layer1\.0\.se \(SEModule\)"):
        to_sparse(timm.create_model("seresnet18", pretrained=False, features_only=True))
    sparse, _ = to_sparse(nn.Sequential(nn.Conv2d(3, 8, 3)))
    with pytest.raises(ConfigError, match="already sparse"):
        to_sparse(sparse)


def test_to_sparse_refuses_norms_that_compute_in_their_own_forward():
    from timm.layers import BatchNormAct2d, GroupNormAct

    with pytest.raises(ConfigError, match=r"1 \(GroupNormAct\): normalises over all positions"):
        to_sparse(nn.Sequential(nn.Conv2d(3, 4, 1), GroupNormAct(4, 2)))
    # timm's BatchNorm + activation in one module has a sparse twin
    sparse, ctx = to_sparse(nn.Sequential(nn.Conv2d(3, 4, 1), BatchNormAct2d(4)))
    x, grid = torch.randn(2, 3, 8, 8), make_patch_mask(2, 8, 8, 4, 0.5, seed=1)
    with torch.no_grad(), ctx.active(grid):
        out = sparse(x)
    assert float(out[~upsample_mask(grid, (8, 8)).expand_as(out)].abs().max()) == 0.0


def test_a_context_without_an_active_mask_says_how_to_give_one():
    from depthlib.errors import ConfigError
    from depthlib.spark.sparse import SparseContext

    with pytest.raises(ConfigError, match="ctx.active"):
        SparseContext().mask_for(torch.zeros(1, 3, 4, 4))


@pytest.mark.parametrize("encoder", ["tu-efficientnet_lite0", "resnet50"])
def test_gathered_1x1_convolutions_equal_masked_dense_forward_and_gradients(encoder, monkeypatch):
    from depthlib.spark import sparse
    from depthlib.spark.model import SparK
    from depthlib.spark.sparse import conv_kind

    gathers = []  # every gather, so the test sees the gathered path run (not two dense models)
    real_gather = sparse._gather
    monkeypatch.setattr(sparse, "_gather", lambda x, m: gathers.append(1) or real_gather(x, m))

    torch.manual_seed(0)
    dense_path = SparK(encoder, encoder_depth=4, decoder_width=32)
    gathered = SparK(encoder, encoder_depth=4, decoder_width=32, gather=("1x1",))
    gathered.load_state_dict(dense_path.state_dict())
    kinds = {conv_kind(m) for m in gathered.encoder.modules() if isinstance(m, nn.Conv2d)}
    assert "1x1" in kinds and kinds - {"1x1"}  # both paths are exercised in one encoder
    images = torch.randn(4, 3, 32, 48)
    mask = make_patch_mask(4, 32, 48, 16, 0.6, seed=1)
    results = []
    n_gathers = []
    for model in (dense_path, gathered):
        gathers.clear()
        loss, _ = model(images, mask)
        n_gathers.append(len(gathers))
        loss.backward()
        with torch.no_grad():
            feats = model.features(images, mask)
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((loss.detach(), feats, grads))
    (loss_a, feats_a, grads_a), (loss_b, feats_b, grads_b) = results
    n_1x1 = sum(
        isinstance(m, nn.Conv2d) and conv_kind(m) == "1x1" for m in gathered.encoder.modules()
    )
    assert n_gathers[1] - n_gathers[0] == n_1x1  # one gather per 1x1 convolution, none in dense
    torch.testing.assert_close(loss_b, loss_a, rtol=1e-5, atol=1e-7)
    for fa, fb in zip(feats_a[2:], feats_b[2:], strict=True):
        torch.testing.assert_close(fb, fa, rtol=1e-5, atol=1e-5)
        hidden = ~upsample_mask(mask, fb.shape[-2:]).expand_as(fb)
        assert torch.count_nonzero(fb[hidden]) == 0  # masked positions exactly 0
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        torch.testing.assert_close(grads_b[name], grads_a[name], rtol=1e-4, atol=1e-6)


def test_gather_refuses_kinds_it_cannot_compute_sparsely():
    from depthlib.spark.model import SparK

    with pytest.raises(ConfigError, match="masked dense"):
        SparK("resnet18", encoder_depth=4, decoder_width=32, gather=("depthwise",))
    with pytest.raises(ConfigError, match="zero-out"):
        SparK("resnet18", encoder_depth=4, decoder_width=32, masking="zero-out", gather=("1x1",))
