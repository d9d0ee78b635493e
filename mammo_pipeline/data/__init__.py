"""Data layer: the DDSM tfrecord contract, readers, writers, pipeline, synthetic data."""
