"""Training plumbing shared by every job: one loop, its settings, batches, checkpoints, optimizer,
logs and multi-process support. It knows neither SparK nor a dataset: a job hands it a model, a
:class:`~depthlib.train.config.Task` and a batch source."""

from depthlib.train.batches import PreloadedBatches, epoch_loader
from depthlib.train.config import Task, TrainConfig, TrainingDiverged, TrainResult
from depthlib.train.loop import fit
from depthlib.train.rng import seed_everything

__all__ = [
    "PreloadedBatches",
    "Task",
    "TrainConfig",
    "TrainResult",
    "TrainingDiverged",
    "epoch_loader",
    "fit",
    "seed_everything",
]
