"""Training: the Keras 3 VGG16 model, fitting, the MLflow record of a training run, evaluation on
the held-out test set and the figures people look at.

Modules: :mod:`.model`, :mod:`.train` (:func:`~.train.train_model`, one MLflow run),
:mod:`.fit` (the two phases), :mod:`.run_logging` (parameters, tags, dataset input, the logged
model), :mod:`.evaluate`, :mod:`.plots`, :mod:`.hardware`.

May import: config, errors, overrides, common and data. Never validation, registry, serving,
orchestration or cli (the registry reads training runs, not the other way round).
"""
