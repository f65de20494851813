"""SAM's pixel normalisation (RGB, 0-255 units), shared by every SAM and by input preparation."""

PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)
