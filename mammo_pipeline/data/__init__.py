"""Data layer: the DDSM / CBIS-DDSM tfrecord contract, readers, writers, pipeline, synthetic data."""
