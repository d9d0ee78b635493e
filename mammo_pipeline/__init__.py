"""mammo-mlops: the library behind the DAGs, the CLI and the serving code.

Importing this package is cheap and side-effect free; heavy libraries (TensorFlow, MLflow,
Great Expectations, BentoML) are imported by the modules that need them.
"""

__version__ = "0.1.0"
