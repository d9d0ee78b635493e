"""Data layer: the DDSM tfrecord contract, readers, writers, pipeline, synthetic data, numpy
splits, manifests and the importers of other public formats.

May import: config, errors and common only (every later stage builds on it).
"""
