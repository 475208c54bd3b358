"""SparK, the method: patch masks, sparse operators that keep masked positions empty, the
densifier and light decoder, and the model with its masked-patch loss and encoder export."""

from depthlib.spark.masks import make_patch_mask
from depthlib.spark.model import SparK, masked_patch_loss
from depthlib.spark.sparse import SparseContext, SparseEncoder, to_dense, to_sparse

__all__ = [
    "SparK",
    "SparseContext",
    "SparseEncoder",
    "make_patch_mask",
    "masked_patch_loss",
    "to_dense",
    "to_sparse",
]
