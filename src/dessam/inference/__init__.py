"""Inference: one pipeline from images to label maps (batched encoder, detector, decoder), tiling of
large fields, and the files `dessam predict` writes."""
