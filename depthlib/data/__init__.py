"""Data: NYU Depth V2 readers (labeled .mat, folder exports), the procedural rooms set, image pools
for pretraining, and the paired transforms every sample goes through."""

from depthlib.data.dataset import DepthDataset, open_depth_dataset
from depthlib.data.folders import BTSFolder, DenseDepthFolder
from depthlib.data.nyu import NYULabeled, write_labeled, write_splits
from depthlib.data.rooms import render_room, rooms_for_profile, synthesize

__all__ = [
    "BTSFolder",
    "DenseDepthFolder",
    "DepthDataset",
    "NYULabeled",
    "open_depth_dataset",
    "render_room",
    "rooms_for_profile",
    "synthesize",
    "write_labeled",
    "write_splits",
]
