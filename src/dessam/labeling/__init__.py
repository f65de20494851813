"""Boxes to masks: a COCO file's annotated boxes segmented by a trained model or by SAM itself."""
