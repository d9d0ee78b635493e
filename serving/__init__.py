"""The BentoML service of mammo-mlops (``serving.service:MammoClassifier``) and its build."""
