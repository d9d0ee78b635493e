"""Serving the champion: what the BentoML service (``serving/service.py``) and the deployer use.

Modules: :mod:`.image_io` (uploads -> the training input's pixel form), :mod:`.model_loader`
(registry version -> BentoML model store -> Keras model), :mod:`.state` (the local
deployment's state file and lock), :mod:`.backend` (one ``bentoml serve`` process),
:mod:`.smoke` (the deploy smoke test), :mod:`.proxy` (the one-machine live-port proxy) and
:mod:`.deploy` (the blue/green flow).

May import: config, errors, common, data (preprocessing), training (the model input
contract), registry (aliases, deploy records). Never orchestration or cli. Nothing is
imported here, so ``import mammo_pipeline.serving.image_io`` stays light.
"""
