"""mammo_validate_incoming: validate new tfrecords in the landing directory.

Wiring only; the logic lives in ``mammo_pipeline.orchestration.tasks``.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Asset, dag, task

from mammo_pipeline.config import get_settings
from mammo_pipeline.orchestration.params import VALIDATED_DATA_ASSET

validated_data = Asset(VALIDATED_DATA_ASSET)
#: A timetable, not an AssetWatcher: the file triggers Airflow ships for watchers
#: (FileDeleteTrigger, DirectoryFileDeleteTrigger) delete the file they saw, and landing files
#: must stay where they are until validation claims them.
every = get_settings().validate_every_minutes


@dag(
    dag_id="mammo_validate_incoming",
    schedule=timedelta(minutes=every),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["mammo", "data"],
    doc_md="""
### Validate incoming mammogram tiles

Every `MAMMO_VALIDATE_EVERY_MINUTES` minutes (default 10; trigger it by hand to validate at
once) this validates each tfrecord file in the landing directory against the Great
Expectations suite in `expectations/`.

* a file that passes is moved to `validated/`;
* a file that fails is moved to `quarantine/` with `<file>.reason.json` naming every failed
  expectation; nothing is ever deleted or overwritten;
* when anything new passed, the Asset `mammo_validated_data` is updated, which triggers
  `mammo_retrain`. When nothing new passed, `publish_validated` is skipped and says why.

The Data Docs location and the per-file verdicts are in the XCom of `validate_landing`.
""",
)
def mammo_validate_incoming():
    @task
    def validate_landing() -> dict:
        from mammo_pipeline.orchestration.tasks import validate_incoming

        return validate_incoming()

    @task(outlets=[validated_data])
    def publish_validated(result: dict) -> list[str]:
        from mammo_pipeline.orchestration.tasks import new_validated_files_or_skip

        return new_validated_files_or_skip(result)

    publish_validated(validate_landing())


mammo_validate_incoming()
