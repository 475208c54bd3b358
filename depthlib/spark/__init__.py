"""SparK, the method: sparse operators and the rewrite that makes an encoder sparse (``sparse``),
the densifier and light decoder (``decoder``), the model with its masks and loss (``model``)."""
