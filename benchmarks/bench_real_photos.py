"""Does a rooms-trained model see depth in real photos? Scores runs on a folder export of real NYU pairs.

For each run (a fine-tuning run folder) and two baselines fitted on the run's training data (the
train set's mean depth map, and its median depth: a constant map), on every pair of a DenseDepth
test export (``nyu2_test.csv``, 480x640, Eigen crop):

- metric: the protocol as it is (the prediction in metres);
- median-scaled: each prediction multiplied by median(GT) / median(prediction) first, the
  scale-free score; a constant map scaled so is the floor a model must clear to show it sees
  any structure.

    python benchmarks/bench_real_photos.py --data PATH/nyu2_test.csv --run imagenet=runs/finetune-x

Writes ``benchmarks/results/real_photos.json`` (provenance, the data's content hash, every row)
and ``benchmarks/results/real_photos.png`` (photo | ground truth | each run's prediction) and
prints the table. The pairs are for measuring only: nothing here trains on them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from provenance import REPO, provenance, refuse_to_replace

from depthlib.atomic import atomic_write_text, to_json
from depthlib.course.study import data_identity
from depthlib.data.dataset import open_depth_dataset
from depthlib.depth.metrics import MeanDepthBaseline, format_table
from depthlib.errors import ConfigError
from depthlib.jobs.evaluate import MODEL_ROW, evaluate
from depthlib.jobs.predict import Predictor
from depthlib.viz import save_figure
from depthlib.viz.data import show_depth

RESULTS = REPO / "benchmarks" / "results"
SHOWN = ("delta1", "abs_rel", "rmse")


def run_config(run: str | Path) -> dict:
    """What a fine-tuning run recorded about itself (profile, data, settings), from its folder."""
    metas = sorted(Path(run).glob("checkpoints/*/meta.json"))
    if not metas:
        raise ConfigError(f"{run} is not a fine-tuning run folder (no checkpoints/*/meta.json).")
    return json.loads(metas[-1].read_text())["run_config"]


def training_data(run: str | Path) -> Path:
    """The labelled file a fine-tuning run trained on."""
    return Path(run_config(run)["data"])


def run_summary(run: str | Path) -> dict:
    """The settings a reader needs to know which model a row is."""
    config = run_config(run)
    keys = ("encoder", "encoder_weights", "epochs", "batch_size", "lr", "label_fraction", "seed")
    settings = {k: config["finetune"][k] for k in keys}
    return {"folder": Path(run).name, "profile": config["profile"],
            "input_size": config["input_size"], "n_train": config["n_train"], **settings}  # fmt: skip


def score(runs: dict, data: Path, train_data: Path | None) -> dict[str, dict]:
    """``{row name: metrics}``: each run and the two baselines, metric and median-scaled."""
    rows = {}
    for scaled in (False, True):
        how = "median-scaled" if scaled else "metric"
        for k, (name, run) in enumerate(runs.items()):
            result = evaluate(
                run, data, "test", train_data=train_data or training_data(run), progress=False,
                boundaries=False, median_scaling=scaled, baselines=k == 0,
            )  # fmt: skip
            for row, metrics in result["rows"].items():
                label = name if row == MODEL_ROW else row
                rows[f"{label} ({how})"] = {m: metrics[m] for m in (*SHOWN, "n_images")}
    return rows


def figure(runs: dict, data: Path, n: int = 4):
    """Photo | ground truth | each run's metric prediction, one depth colour scale per row."""
    reader = open_depth_dataset(data, "test")
    picked = np.linspace(0, len(reader) - 1, min(n, len(reader))).round().astype(int)
    samples = [reader[int(i)] for i in picked]
    predictions = {name: Predictor(run)([s["rgb"] for s in samples]) for name, run in runs.items()}
    cols = 2 + len(runs)
    fig, axes = plt.subplots(len(samples), cols, figsize=(2.6 * cols, 2.1 * len(samples)),
                             squeeze=False, layout="constrained")  # fmt: skip
    for r, sample in enumerate(samples):
        vmax = float(np.ceil(sample["depth"].max()))
        axes[r, 0].imshow(sample["rgb"])
        show_depth(axes[r, 1], sample["depth"], vmax)
        for c, name in enumerate(runs, start=2):
            show_depth(axes[r, c], predictions[name][r], vmax)
        for c, title in enumerate(("real photo", "ground truth (m)", *runs)):
            axes[r, c].set_axis_off()
            if r == 0:
                axes[r, c].set_title(title, fontsize=9)
    return fig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="a DenseDepth-layout test CSV of real pairs")
    parser.add_argument("--run", action="append", required=True, metavar="NAME=RUN_DIR")
    parser.add_argument("--train-data", help="baselines' training file (default: the first run's)")
    parser.add_argument("--out", default=str(RESULTS / "real_photos.json"))
    parser.add_argument("--figure", default=str(RESULTS / "real_photos.png"))
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args()
    if bad := [item for item in args.run if "=" not in item or not item.split("=", 1)[1]]:
        parser.error(f"--run takes NAME=RUN_DIR (a fine-tuning run folder), got {bad[0]!r}")
    runs = dict(item.split("=", 1) for item in args.run)
    out = refuse_to_replace(args.out, args.overwrite)
    data = Path(args.data)
    train = Path(args.train_data) if args.train_data else training_data(next(iter(runs.values())))
    rows = score(runs, data, train)
    table = format_table({k: {m: v[m] for m in SHOWN} for k, v in rows.items()})
    print(f"{rows[next(iter(rows))]['n_images']} real pairs, Eigen crop:\n{table}")
    record = {
        "provenance": provenance(),
        "data": {"file": data.name, "sha256": data_identity(data), "train_data": train.name},
        "runs": {name: run_summary(run) for name, run in runs.items()},
        "baselines": {"mean-depth": MeanDepthBaseline.name, "constant": "train median depth"},
        "rows": rows,
    }
    atomic_write_text(out, to_json(record))
    fig_path = Path(args.figure)
    save_figure(figure(runs, data), fig_path.stem, fig_path.parent)
    print(f"wrote {out} and {fig_path}")


if __name__ == "__main__":
    main()
