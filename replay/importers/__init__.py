"""Importers: recordings of other layouts written as recording stores (`replay.store`).

- `import_fus`: ferret fUS in the layout of Landemard et al. 2021 (per-slice MATLAB files).
- `import_bids`: fMRI in BIDS (NIfTI BOLD runs, events.tsv, sidecar JSON).
- `import_generic`: numpy arrays (frames x voxels) and an events CSV.

Each writes ``<out>.partial`` and renames it to ``out`` once it is complete and valid.
"""
from .bids import import_bids
from .fus import FusLayout, import_fus
from .generic import import_generic
from .target import ImportSummary

__all__ = ["import_bids", "import_fus", "import_generic", "FusLayout", "ImportSummary"]
