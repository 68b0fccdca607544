"""Datasets: zarr episode I/O (``zarr_io``), oracle collection (``collect``), training windows and
normalizers. Submodules are imported explicitly; nothing heavy is imported here."""
