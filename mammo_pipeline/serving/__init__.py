"""Serving the champion: what the BentoML service (``serving/service.py``) and the deployer use.

Modules: :mod:`.image_io` (uploads, DICOM included -> the training input's pixel form),
:mod:`.upload_form` (multipart checks before BentoML parses), :mod:`.limits` (pixel budgets
per request and across requests), :mod:`.model_loader`
(registry version -> BentoML model store -> Keras model), :mod:`.state` (the local
deployment's state file and lock), :mod:`.backend` (one ``bentoml serve`` process),
:mod:`.smoke` (the deploy smoke test), :mod:`.proxy` (the one-machine live-port proxy) and
:mod:`.deploy` (the blue/green flow).

May import: config, errors, common, data (preprocessing), imaging (DICOM), analysis (whole
mammograms), training (the model input contract), registry (aliases, vetting, deploy
records). Never orchestration or cli. Nothing is imported here, so
``import mammo_pipeline.serving.image_io`` stays light.
"""
