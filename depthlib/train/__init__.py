"""Training plumbing shared by every job: one loop, batches, checkpoints, optimizer, logs and
multi-process support. It knows neither SparK nor a dataset: a job hands it a model, a
:class:`~depthlib.train.config.Task`, a :class:`~depthlib.train.config.Loader` and its settings
(a :class:`depthlib.profiles.TrainConfig`)."""

from depthlib.train.batches import PreloadedBatches, epoch_loader
from depthlib.train.config import Loader, Task, TrainingDiverged, TrainResult
from depthlib.train.loop import fit
from depthlib.train.rng import seed_everything

__all__ = [
    "Loader",
    "PreloadedBatches",
    "Task",
    "TrainResult",
    "TrainingDiverged",
    "epoch_loader",
    "fit",
    "seed_everything",
]
