"""dessam in napari: Segment, Masks from boxes and Train from boxes widgets, a reader and a writer
for dessam's files, and a sample field (`pip install "dessam[napari]"`; manifest: napari.yaml).

Only napari imports this package: the rest of dessam never needs napari or Qt.
"""
