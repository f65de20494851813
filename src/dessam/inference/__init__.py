"""Inference: one pipeline from images to label maps (`Predictor`: encode, detect, segment, predict),
images of any size in windows (`windowed`), masks of given boxes (`box_masks`), the instances and
their post-processing (`instances`), and whole slides streamed row by row (`slide_stream`)."""
