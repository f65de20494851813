"""Where pixels go between an image and the model, and back.

`scale` (the object scale a model works at), `inputs` (an image resized, padded and normalised as
SAM's encoder takes it), `tiling` (overlapping windows, the window a box belongs to, and the merge of
their nuclei without seams), `plan` (one image or slide region brought to the model: `WindowPlan`),
`mapping` (mask crops brought back to the image's pixels) and `outlines` (nucleus outlines as GeoJSON
polygons). Numpy and PyTorch tensors only: nothing here knows a model or reads a file.
"""
