"""Plumbing shared by every lifecycle stage, with no ML in it.

Owns: the one MLflow client factory and the one place that points MLflow's fluent API at the
store (:mod:`.mlflow_access`), the one settings-to-environment function for child processes
(:mod:`.environment`), process control (:mod:`.processes`, psutil), free ports and HTTP
polling (:mod:`.net`), JSON-safe numbers (:mod:`.jsonsafe`), the API-key header
(:mod:`.auth`) and the workarounds for upstream bugs (:mod:`.compat`).

May import: :mod:`mammo_pipeline.config`, :mod:`mammo_pipeline.errors` and third-party
libraries only; never a lifecycle stage (data, validation, training, registry, serving,
orchestration, cli).
"""
