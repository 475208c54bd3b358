"""Evaluate a depth model on a dataset split by the NYU protocol, beside baselines from the same run.

A results table without a baseline cannot tell a model that learned depth from one that learned
the average room, so every evaluation also scores the training split's per-pixel mean depth map
and its median depth (both fitted on the TRAIN split of the same data, in the same call). The
protocol itself is :mod:`depthlib.depth.metrics`'s; :func:`evaluate` picks its defaults (input
size, Eigen crop, ground truth) for the data at hand.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from depthlib.atomic import atomic_write_text, to_json
from depthlib.data.dataset import DepthDataset, evenly_spaced, open_depth_dataset
from depthlib.data.nyu import NYULabeled
from depthlib.data.rooms import is_rooms_file
from depthlib.data.transforms import resize_rgb
from depthlib.depth.boundaries import dbe_settings, depth_edges
from depthlib.depth.metrics import (
    EvalSet,
    MeanDepthBaseline,
    MedianDepthBaseline,
    MetricAccumulator,
    format_table,
    score_model,
)
from depthlib.errors import ConfigError, DataError
from depthlib.train.checkpoint import load_checkpoint

__all__ = [
    "auto_eigen_crop",
    "evaluate",
    "fit_baselines",
    "load_eval_set",
    "load_model",
    "score_baselines",
]

NYU_SIZE = (480, 640)
MODEL_ROW = "model"
GROUND_TRUTHS = {"raw": "rawDepths (holes invalid)", "filled": "depths (hole-filled)"}


def _ground_truth_readers(source, ground_truth: str | None) -> tuple:
    """(reader of the ground truth, reader of the dense depth DBE finds edges on, their names)."""
    if isinstance(source, NYULabeled):
        truth = source.with_depth(ground_truth or source.depth_kind)
        filled = source.with_depth("filled")
        return truth, filled, GROUND_TRUTHS[truth.depth_kind], GROUND_TRUTHS["filled"]
    if ground_truth is not None:
        raise ConfigError(
            f"--ground-truth {ground_truth} picks a labelled file's rawDepths or depths; a folder "
            f"export ({type(source).__name__}) has one depth per image, raw or filled as exported, "
            "and takes none. Leave --ground-truth out to score that depth."
        )
    name = f"the export's own depth ({type(source).__name__}, 0 = hole)"
    return source, source, name, name


def load_eval_set(data: DepthDataset, ground_truth: str | None = None) -> EvalSet:
    """A dataset's images, read once: RGB at its size (None: their own, which they must then
    share), the ground truth at its own size and DBE's true edges, found on the filled depth.
    ``ground_truth``: a labelled file's "raw" or "filled" (None: its reader's, by default filled,
    the depth it trains on); folder exports take None only."""
    truth, dense, truth_name, dense_name = _ground_truth_readers(data.source, ground_truth)
    images, depths, valids, edges, indices = [], [], [], [], []
    for position in data.positions:
        sample = truth[position]
        rgb = sample["rgb"] if data.size is None else resize_rgb(sample["rgb"], data.size)
        images.append(torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1))
        depths.append(sample["depth"])
        valids.append(sample["valid"])
        filled = sample if dense is truth else dense[position]
        edges.append(depth_edges(filled["depth"], filled["valid"]))
        indices.append(int(sample["index"]))
    if not images:
        raise DataError("The evaluation split is empty: there is nothing to evaluate.")
    sizes = {tuple(x.shape) for x in images}
    if len(sizes) > 1:
        raise ConfigError(
            f"The images differ in size ({sorted(sizes)[:3]}); give the dataset a size (evaluate's "
            "input_size=(H, W), --input-size HxW) so they can be batched."
        )
    return EvalSet(torch.stack(images), depths, valids, indices, edges, truth_name, dense_name)


def _scoring(eval_set: EvalSet, boundaries: bool) -> tuple[str, dict | None]:
    """(the table's title: the ground truth and where DBE is scored; DBE's settings)."""
    title, shapes = f"Ground truth: {eval_set.ground_truth}.", {d.shape for d in eval_set.depths}
    if not boundaries:
        return title, None
    dbe = dbe_settings(*shapes) if len(shapes) == 1 else {"size": None}  # else each at its own
    at = "GT size W, θ = 10·W/640"
    if dbe["size"]:
        at = "{}×{}, θ = {:.3g}".format(*dbe["size"], dbe["theta_px"])
    title += f" DBE at {at} px, on the edges of {eval_set.edges_from}."
    return title, dbe | {"edges_from": eval_set.edges_from}


BASELINE_IMAGES = 2000  # a 50k-pair training export's mean map needs no more than this


def fit_baselines(
    train_source, max_images: int | None = BASELINE_IMAGES
) -> dict[str, MeanDepthBaseline | MedianDepthBaseline]:
    """The mean depth map and the median depth of a training reader (two streaming passes over
    at most ``max_images`` evenly spaced images: all of NYU's 795)."""
    if len(train_source) == 0:
        raise DataError("The training split is empty, so no baseline can be fitted.")
    positions = evenly_spaced(len(train_source), max_images)
    baselines = {}
    for kind in (MeanDepthBaseline, MedianDepthBaseline):
        depths = (train_source[int(i)]["depth"] for i in positions)
        baselines[kind.name] = kind().fit(depths)  # invalid pixels are 0 in every reader's samples
    return baselines


def score_baselines(
    baselines: dict, eval_set: EvalSet, *, eigen_crop=False, boundaries=False, median_scaling=False
) -> dict:
    """One metrics row per fitted baseline on the same GT maps as the model."""
    rows = {}
    for name, baseline in baselines.items():
        acc = MetricAccumulator(
            eigen_crop=eigen_crop, boundaries=boundaries, median_scaling=median_scaling
        )
        maps = zip(eval_set.depths, eval_set.valids, eval_set.edges, strict=True)
        for depth, valid, edges in maps:
            acc.update(baseline.predict(depth.shape)[None], depth[None], valid[None], edges[None])
        rows[name] = acc.compute()
    return rows


def load_model(checkpoint_or_model, which: str = "latest") -> tuple[nn.Module, dict]:
    """(model in eval mode, info) from a model object or a checkpoint/run folder.

    ``info`` holds the checkpoint folder and the training input size stored by ``finetune``.
    """
    if isinstance(checkpoint_or_model, nn.Module):
        return checkpoint_or_model.eval(), {"checkpoint": None, "input_size": None}
    if not isinstance(checkpoint_or_model, (str, os.PathLike)):
        raise ConfigError(
            "Pass a model (nn.Module) or the folder of a training run / checkpoint, got "
            f"{type(checkpoint_or_model).__name__}."
        )
    ckpt = load_checkpoint(checkpoint_or_model, which=which)
    model = ckpt.build_model().eval()
    size = (ckpt.meta.get("run_config") or {}).get("input_size")
    return model, {
        "checkpoint": str(ckpt.path),
        "input_size": tuple(int(v) for v in size) if size else None,
        "epoch": ckpt.meta.get("epoch"),
        "step": ckpt.meta.get("step"),
    }


def auto_eigen_crop(source) -> bool:
    """True for real NYU at 480x640 (the protocol's crop); the rooms set has no border to hide."""
    sample_size = getattr(source, "image_size", None)
    if sample_size is None and len(source):
        sample_size = source[0]["depth"].shape
    if tuple(sample_size or ()) != NYU_SIZE:
        return False
    return not (isinstance(source, NYULabeled) and is_rooms_file(source.path))


def _file_key(path) -> tuple | None:
    """A file as a cache key: its resolved path, size and modification time (a rewritten file
    is another key)."""
    if path is None:
        return None
    path = Path(path).resolve()
    stat = path.stat()
    return (str(path), stat.st_size, stat.st_mtime_ns)


def _keep_recent(maxsize: int):
    """Keep the last ``maxsize`` results of ``make()`` per key, in this process. A study scores
    dozens of runs on the same test split: each run would otherwise re-read the split and refit
    the baselines (half a minute on 2 cores for the cpu profile's 654 test images)."""
    store: dict = {}

    def cached(key, make):
        if key not in store:
            while len(store) >= maxsize:
                store.pop(next(iter(store)))
            store[key] = make()
        value = store[key]
        return {k: dict(v) for k, v in value.items()} if isinstance(value, dict) else value

    return cached


_cached_eval_set = _keep_recent(2)
_cached_baseline_rows = _keep_recent(4)


def evaluate(
    checkpoint_or_model,
    data: str | os.PathLike,
    split: str = "test",
    *,
    eigen_crop: bool | None = None,
    batch_size: int = 16,
    input_size: Sequence[int] | None = None,
    which: str = "latest",
    baselines: bool = True,
    train_data: str | os.PathLike | None = None,
    max_images: int | None = None,
    out: str | os.PathLike | None = None,
    progress: bool = True,
    boundaries: bool = True,
    median_scaling: bool = False,
    ground_truth: str | None = None,
) -> dict:
    """Score a model (or a checkpoint / run folder) on ``split`` of ``data``, with baselines.

    eigen_crop: None = automatic (True for real NYU 480x640 data, False for the rooms set).
    input_size: the network's input (H, W); default the training size a checkpoint stores,
    else the images' own size. which: "latest" or "best" checkpoint of a run folder.
    baselines: fit the train split's mean depth map and median depth (``train_data`` for folder
    exports, which hold one split). max_images: evenly spaced subset, for quick looks only.
    out: also write the result as JSON there. boundaries: add the depth boundary errors (DBE).
    median_scaling: scale every prediction to the GT's median first (scale-free, not the protocol).
    ground_truth: a labelled file's "raw" (``rawDepths``, holes invalid; the default) or "filled"
    (``depths``); a folder export takes None (its one depth).

    Returns ``{"rows": {name: metrics}, "table": markdown titled with the ground truth and DBE's
    settings, "data", "split", "ground_truth", "dbe" (size, theta_px, canny_sigma, edges_from;
    None without boundaries), "eigen_crop", "input_size", "checkpoint", "n_images",
    "inference_images_per_s", "notes"}``.
    """
    model, info = load_model(checkpoint_or_model, which)
    data = Path(data)
    source = open_depth_dataset(data, split)
    if eigen_crop is None:
        eigen_crop = auto_eigen_crop(source)
    if ground_truth is None and isinstance(source, NYULabeled):
        ground_truth = "raw"  # the published protocol (BTS, AdaBins)
    size = tuple(int(v) for v in input_size) if input_size is not None else info["input_size"]
    positions = tuple(evenly_spaced(len(source), max_images))
    key = (_file_key(data), split, size, positions, ground_truth)
    data_set = DepthDataset(source, positions, size=size)
    eval_set = _cached_eval_set(key, lambda: load_eval_set(data_set, ground_truth))
    scoring = {"eigen_crop": eigen_crop, "boundaries": boundaries, "median_scaling": median_scaling}
    model_row = score_model(model, eval_set, batch_size=batch_size, progress=progress, **scoring)
    rows = {MODEL_ROW: model_row}
    notes = []
    if baselines:
        # a folder export is one split: there is no train split to fit baselines on
        train_file = train_data or (data if isinstance(source, NYULabeled) else None)
        if train_file is None:
            notes.append("no baselines: pass train_data= (--train-data) for a one-split export")
        else:
            train = open_depth_dataset(train_file, "train")
            try:
                rows |= _cached_baseline_rows(
                    (*key, _file_key(train_data), tuple(sorted(scoring.items()))),
                    lambda: score_baselines(fit_baselines(train), eval_set, **scoring),
                )
            except DataError as err:  # e.g. a partly extracted file: the model is still scored
                notes.append(f"no baselines: the train split gave none ({err})")
    title, dbe = _scoring(eval_set, boundaries)
    result = {
        "rows": rows,
        "table": f"{title}\n\n{format_table(rows)}",
        "data": str(data),
        "split": split,
        "ground_truth": eval_set.ground_truth,
        "dbe": dbe,
        "eigen_crop": bool(eigen_crop),
        "median_scaling": bool(median_scaling),
        "input_size": list(size) if size else None,
        "checkpoint": info["checkpoint"],
        "n_images": len(eval_set),
        "inference_images_per_s": model_row["images_per_s"],
        "notes": notes,
    }
    if out is not None:
        atomic_write_text(Path(out), to_json(result))
    return result
