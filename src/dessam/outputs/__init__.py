"""Results as files that open in the usual tools: label TIFFs, overlays, CSV tables, JSON, COCO
results and QuPath GeoJSON per image (`writers`), whole-slide writers that stream one nucleus at a
time (`slide_writers`), and `dessam predict` over files and slides (`files`, `slides`)."""
