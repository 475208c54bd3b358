"""depthlib: single-image depth estimation with SparK pretraining and UNet++, taught in notebooks.

The few entry points are importable from here (loaded on first use, so ``import depthlib`` stays
cheap); everything else lives in the subpackages: ``spark`` (the method), ``depth`` (model,
losses, metrics), ``data``, ``train`` (the loop), ``jobs``, ``course`` and ``viz`` (figures).
"""

from importlib import import_module

from depthlib.errors import ConfigError, DataError, DepthlibError

__version__ = "0.1.0"

_ENTRY_POINTS = {
    "DepthUNetPlusPlus": "depthlib.depth.unetpp",
    "SparK": "depthlib.spark.model",
    "evaluate": "depthlib.jobs.evaluate",
    "finetune": "depthlib.jobs.finetune",
    "get_profile": "depthlib.profiles",
    "write_depth_maps": "depthlib.jobs.predict",
    "pretrain": "depthlib.jobs.pretrain",
    "reproduce": "depthlib.course.reproduce",
}
__all__ = ["ConfigError", "DataError", "DepthlibError", "__version__", *_ENTRY_POINTS]


def __getattr__(name: str):
    if name in _ENTRY_POINTS:
        return getattr(import_module(_ENTRY_POINTS[name]), name)
    raise AttributeError(f"module 'depthlib' has no attribute {name!r}")
