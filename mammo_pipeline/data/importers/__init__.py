"""Importers of real mammography data sets into the DDSM tile contract.

Each importer reads a public data set in its own published layout and writes training tiles
as tfrecords (normally into the landing folder) and held-out tiles in the published numpy
form, plus a JSON import report of every decision (skipped rows, downscaled lesions,
excluded patients). Modules:

- :mod:`.cbis_ddsm`: CBIS-DDSM (description CSVs + full-field and ROI mask DICOMs).
- :mod:`.mias`: MIAS (PGM films + ``Info.txt``).
- :mod:`.tiling`: cutting lesion and normal tiles at 0.1 mm per pixel.
- :mod:`.runner`: the per-image steps and the finish shared by importers.
- :mod:`.output`: all-or-nothing writing of tfrecords, numpy split and report.
- :mod:`.common`: errors, the label rule, stable seeded randomness, the decision log.
"""
