"""Monitoring of the served model: the prediction log, outcome feedback, drift and realised
performance against the served version's own reference, and the alert policy.

One module per job:

- :mod:`.records`   the privacy-safe per-image prediction record and its input statistics;
- :mod:`.store`     :class:`~.store.PredictionStore`: the log and the feedback, embedded
  (SQLite under ``<data dir>/monitoring/``) or PostgreSQL, one schema, retention;
- :mod:`.writer`    :class:`~.writer.PredictionLogger`: bounded, asynchronous, never raises
  into a request, counts what it drops;
- :mod:`.feedback`  outcome feedback records and the bulk CSV loader;
- :mod:`.stats`     PSI, the two-sample KS test, Wilson intervals of rates (scipy, numpy);
- :mod:`.reference` the served version's reference (held-out predictions, input statistics);
- :mod:`.windows`   a window of the log against the reference: the figures of one window;
- :mod:`.policy`    what counts as an alert, and the alert's tags on the model version;
- :mod:`.report`    the monitoring report (JSON summary + HTML page with plots) logged to
  MLflow; :mod:`.plots` draws its figures.

May import: common, stats, data (the model-input contract), training (the predictions
artifact) and registry (aliases, evidence, tags); never serving, orchestration or cli (the
service imports this package, not the other way round). Nothing is imported here.
"""
