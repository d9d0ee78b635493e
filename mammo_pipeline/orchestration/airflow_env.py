"""Environment for running Airflow on this project's DAGs (embedded mode and tests).

Airflow reads its configuration from ``AIRFLOW__SECTION__KEY`` variables; this builds them
from the settings so that the demo, the tests and a developer's shell agree: Airflow home
under the project, SQLite metadata, LocalExecutor, the repo's ``dags/`` folder.
"""

from __future__ import annotations

from pathlib import Path

from mammo_pipeline.common.environment import REPO_ROOT, settings_env
from mammo_pipeline.config import Settings

DAGS_FOLDER = REPO_ROOT / "dags"


def airflow_env(
    settings: Settings,
    *,
    sql_alchemy_conn: str | None = None,
    executor: str = "LocalExecutor",
    api_port: int = 8080,
    extra: dict[str, str] | None = None,
    celery_broker_url: str | None = None,
    celery_result_backend: str | None = None,
) -> dict[str, str]:
    """A full environment (``os.environ``, the settings as MAMMO_* variables, and Airflow's).

    For the distributed shape (``executor="CeleryExecutor"``) pass the broker (e.g.
    ``redis://host:6379/0``) and the result backend (e.g. ``db+postgresql://...``); they are
    only set when given.
    """
    home = Path(settings.airflow_home).resolve()
    env = settings_env(settings)
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": executor,
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": sql_alchemy_conn
            or f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__API__PORT": str(api_port),
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{api_port}",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "15",
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
        }
    )
    if celery_broker_url:
        env["AIRFLOW__CELERY__BROKER_URL"] = celery_broker_url
    if celery_result_backend:
        env["AIRFLOW__CELERY__RESULT_BACKEND"] = celery_result_backend
    env.update(extra or {})
    return env
