"""depthlib: single-image depth estimation with SparK pretraining and UNet++, taught in notebooks.

The package holds all logic; the notebooks in ``notebooks/`` only narrate and call it.
"""

from depthlib.errors import DepthlibError

__version__ = "0.1.0"
__all__ = ["DepthlibError", "__version__"]
