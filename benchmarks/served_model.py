"""Register a benchmark's model so that the service will serve it (shared by the benchmarks).

The service serves only a version whose passing gate decision is signed by a trusted key
(docs/threat-model.md): a ``gate=passed`` tag alone is refused. This writes the decision the gate
would write, with the settings' key (the embedded default under the data dir) over the
registered files' digest, exactly as ``tests/signed_versions.py`` does for the tests. Not a
bypass: the service verifies it like any other. Not a benchmark itself (``make bench`` runs
it and it does nothing).
"""

from __future__ import annotations

from typing import Any


def register_served(settings: Any, model: Any, threshold: float = 0.5) -> str:
    """Log ``model`` the way training does, register it, sign a passing gate decision, make it
    the ``champion``; its version."""
    import mlflow

    from mammo_pipeline.common.mlflow_access import configure_mlflow, mlflow_client
    from mammo_pipeline.registry.attestation import decision_record, registered_files_sha256
    from mammo_pipeline.registry.names import SIGNED_DECISION
    from mammo_pipeline.registry.policy import GatePolicy

    configure_mlflow(settings)
    size = int(model.input_shape[1])
    with mlflow.start_run():
        mlflow.log_metric("decision_threshold", threshold)
        info = mlflow.keras.log_model(
            model,
            name="model",
            metadata={"decision_threshold": threshold, "image_size": size},
        )
    name = settings.registered_model_name
    mv = mlflow.register_model(info.model_uri, name)
    version = str(mv.version)
    client = mlflow_client(settings)
    client.set_model_version_tag(name, version, "gate", "passed")
    record = decision_record(
        settings,
        name=name,
        version=version,
        run_id=mv.run_id,
        verdict="passed",
        awaiting_approval=False,
        policy=GatePolicy.from_settings(settings),
        champion=None,
        baseline=None,
        evidence={"model_sha256": registered_files_sha256(settings, name, version)},
    )
    client.set_model_version_tag(name, version, SIGNED_DECISION, record)
    client.set_registered_model_alias(name, "champion", version)
    return version


if __name__ == "__main__":  # `make bench` runs every file here
    print("benchmarks/served_model.py: a helper of the serving benchmarks, nothing to measure")
