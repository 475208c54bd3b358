"""Test-wide settings: offline model hubs, a non-interactive plot backend, few threads, quick profile."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("DEPTHLIB_PROFILE", "quick")

import torch  # noqa: E402

torch.set_num_threads(1)  # tiny test models run faster on one thread
