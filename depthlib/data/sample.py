"""The sample every reader returns, and the rule that decides which depth pixels are valid.

All readers (labeled.mat, DenseDepth CSV, BTS list) hand out the same plain dict so transforms,
the torch wrapper and the notebooks never need to know where a sample came from:
``{"rgb": uint8 (H, W, 3), "depth": float32 (H, W) metres, 0 where invalid, "valid": bool (H, W),
"index": int, "name": str}``.
"""

from __future__ import annotations

import numpy as np

from depthlib.errors import DataError

MIN_VALID_DEPTH = 1e-3  # metres; the evaluation protocol's lower bound (raw holes are exactly 0)

DATA_SOURCES_HINT = (
    "NYU Depth V2's labeled file is "
    "http://horatio.cs.nyu.edu/mit/silberman/nyu_depth_v2/nyu_depth_v2_labeled.mat (2.8 GB); its "
    "train/test split is splits.mat from the NYU toolbox (also on common mirrors, e.g. the BTS and "
    "AdaBins repositories) - put it beside the .mat file. Without NYU, render the procedural rooms "
    "set in the same layout: `depthlib synth --out data/rooms.mat`."
)


def make_sample(rgb: np.ndarray, depth: np.ndarray, index: int, name: str) -> dict:
    """Build a sample dict: depth in metres as float32, invalid pixels (NaN, inf, <= 1 mm) set to 0.

    Raises ``DataError`` if the colour image and the depth map disagree in size, because a silent
    mismatch would misalign every pixel of the training target.
    """
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    depth = np.array(depth, dtype=np.float32)  # a copy: we overwrite invalid pixels below
    if rgb.ndim != 3 or rgb.shape[2] != 3 or depth.shape != rgb.shape[:2]:
        raise DataError(
            f"Sample {name!r}: colour image {rgb.shape} and depth map {depth.shape} do not match "
            "(expected (H, W, 3) and (H, W) of the same size). Re-export this pair."
        )
    with np.errstate(invalid="ignore"):  # raw depth marks holes with 0
        valid = np.isfinite(depth) & (depth > MIN_VALID_DEPTH)
    depth[~valid] = 0.0
    return {"rgb": rgb, "depth": depth, "valid": valid, "index": int(index), "name": str(name)}
