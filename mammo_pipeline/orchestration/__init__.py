"""Orchestration: what the Airflow DAG files call, and how Airflow is run for this project.

Modules: :mod:`.params` (DAG constants and trigger-Param schemas; imported at DAG parse time,
so cheap), :mod:`.tasks` (one function per DAG task, JSON in and out), :mod:`.airflow_env`
(Airflow's environment from the settings) and :mod:`.demo` (``make demo``; its API key and
shell instructions in :mod:`.demo_access`).

May import every lifecycle stage (data, validation, training, registry, serving) and common;
nothing imports orchestration except the DAG files and the CLI. Nothing is imported here.
"""
