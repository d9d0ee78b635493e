"""Start and stop the distributed shape of mammo-mlops on local services, for tests.

The same roles as ``docker-compose.yml``, as plain processes on this machine:

- PostgreSQL (already running, ``MAMMO_TEST_PG_DSN``, default
  ``postgresql://postgres@127.0.0.1:5432/postgres``): three fresh databases per stack,
  ``mammo_af_<id>`` (Airflow metadata and Celery result backend), ``mammo_mlf_<id>``
  (MLflow tracking and registry) and ``mammo_mlfauth_<id>`` (MLflow's users and
  permissions), dropped by :meth:`DistributedStack.stop`;
- Redis (already running, ``MAMMO_TEST_REDIS_URL``, default ``redis://127.0.0.1:6379/5``):
  the Celery broker; every key of this stack carries the prefix ``mammo_test_<id>:`` (kombu's
  ``global_keyprefix``), so parallel sessions never steal each other's tasks, and exactly
  those keys are deleted at the end;
- ``mlflow server --app-name basic-auth`` on the PostgreSQL databases with a proxied
  artifact store under the stack's root, its users and permissions created by
  ``docker/mlflow_auth_init.py`` (the compose stack's ``mlflow-init`` runs the same file):
  an admin, a ``writer`` (the Airflow components run as it), a read-only ``serving`` user and
  a ``reviewer``, each with a random password (:attr:`DistributedStack.mlflow_users`);
- ``airflow api-server``, ``scheduler``, ``dag-processor`` and ``celery worker --queues
  default,gpu,serving --concurrency 1`` with ``CeleryExecutor``; the REST API uses the
  SimpleAuthManager with a user and password (``POST /auth/token``), as in the compose file.

Every process runs in its own process group and logs to ``<root>/logs/<name>.log``;
:meth:`DistributedStack.stop` sends SIGTERM to each group (then SIGKILL to what is left,
descendants included), stops the BentoML service the ``deploy`` task started, drops the
databases and deletes the Redis keys. It is safe to call more than once and after a failed
start.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mammo_pipeline.common.processes import descendants

BIN = Path(sys.executable).parent
REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PG_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/5"
ADMIN_USER = "admin"
AUTH_INIT = REPO_ROOT / "docker" / "mlflow_auth_init.py"
MLFLOW_ROLES = ("admin", "writer", "serving", "reviewer")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pg_dsn() -> str:
    return os.environ.get("MAMMO_TEST_PG_DSN", DEFAULT_PG_DSN)


def redis_url() -> str:
    return os.environ.get("MAMMO_TEST_REDIS_URL", DEFAULT_REDIS_URL)


def services_problem() -> str | None:
    """``None`` when PostgreSQL and Redis answer, else what is wrong (one line)."""
    problems = []
    try:
        import psycopg2

        psycopg2.connect(pg_dsn(), connect_timeout=5).close()
    except Exception as exc:  # noqa: BLE001 - any failure means "not usable"
        problems.append(f"PostgreSQL at {pg_dsn()}: {str(exc).strip().splitlines()[0]}")
    try:
        import redis

        redis.Redis.from_url(redis_url(), socket_connect_timeout=5).ping()
    except Exception as exc:  # noqa: BLE001
        problems.append(f"Redis at {redis_url()}: {exc}")
    return "; ".join(problems) or None


def missing_drivers() -> str | None:
    """What the installed packages lack for the distributed mode (``None`` when complete).

    Airflow 3 opens its metadata database with a sync and an async engine: on PostgreSQL it
    needs ``psycopg2`` and ``asyncpg`` (both part of ``apache-airflow[postgres]``). The Celery
    provider 3.26 imports ``celery.backends.database.retry``, which celery 5.7 removed."""
    import importlib.util

    problems = []
    missing = [m for m in ("psycopg2", "asyncpg") if importlib.util.find_spec(m) is None]
    if missing:
        problems.append(
            f"Python package(s) {', '.join(missing)} not installed: Airflow on PostgreSQL needs "
            "psycopg2 (sync engine) and asyncpg (async engine)"
        )
    if importlib.util.find_spec("flask_wtf") is None:
        problems.append(
            "Flask-WTF is not installed: MLflow's basic-auth app needs it (mlflow[auth])"
        )
    try:
        import celery
        import celery.backends.database as celery_db
    except ImportError as exc:
        problems.append(f"celery cannot be imported: {exc}")
    else:
        if not hasattr(celery_db, "retry"):
            problems.append(
                f"celery {celery.__version__} lacks celery.backends.database.retry, which "
                "apache-airflow-providers-celery imports (the Celery worker cannot start); "
                "use celery<5.7"
            )
    if problems:
        return "; ".join(problems) + " (fix the project's dependencies, then `make install`)"
    return None


def _with_db(dsn: str, database: str, scheme: str | None = None) -> str:
    parts = urllib.parse.urlsplit(dsn)
    return urllib.parse.urlunsplit(
        (scheme or parts.scheme, parts.netloc, f"/{database}", parts.query, "")
    )


def live_in_groups(pgids: set[int]) -> list[int]:
    """Pids of live (non-zombie) processes whose process group is one of ``pgids``."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[2]) in pgids:
            out.append(int(entry.name))
    return out


@dataclass
class Component:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    one_shot: bool = False  # expected to exit (with status 0)

    @property
    def failed(self) -> bool:
        rc = self.proc.poll()
        return rc is not None and (rc != 0 or not self.one_shot)

    def tail(self, lines: int = 25) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(text[-lines:])


@dataclass
class DistributedStack:
    """One isolated distributed deployment under ``root`` (see the module docstring)."""

    root: Path
    tag: str = field(default_factory=lambda: secrets.token_hex(4))
    components: list[Component] = field(default_factory=list)
    databases: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    settings: Any = None

    def __post_init__(self) -> None:
        self.af_db = f"mammo_af_{self.tag}"
        self.mlf_db = f"mammo_mlf_{self.tag}"
        self.mlf_auth_db = f"mammo_mlfauth_{self.tag}"
        self.key_prefix = f"mammo_test_{self.tag}:"
        self.api_port = free_port()
        self.mlflow_port = free_port()
        self.password = secrets.token_urlsafe(16)
        # MLflow's users: role -> (username, password); passwords >= 12 characters (MLflow)
        self.mlflow_users = {
            role: (f"mammo-{role}-{self.tag}", secrets.token_urlsafe(18)) for role in MLFLOW_ROLES
        }
        self.logs = self.root / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self._token: str | None = None

    # ---------------------------------------------------------------- urls
    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def mlflow_url(self) -> str:
        return f"http://127.0.0.1:{self.mlflow_port}"

    @property
    def airflow_db_uri(self) -> str:
        return _with_db(pg_dsn(), self.af_db, "postgresql+psycopg2")

    @property
    def mlflow_db_uri(self) -> str:
        return _with_db(pg_dsn(), self.mlf_db, "postgresql+psycopg2")

    @property
    def mlflow_auth_db_uri(self) -> str:
        return _with_db(pg_dsn(), self.mlf_auth_db, "postgresql+psycopg2")

    # ---------------------------------------------------------------- databases
    def _admin_conn(self):
        import psycopg2

        conn = psycopg2.connect(pg_dsn(), connect_timeout=10)
        conn.autocommit = True
        return conn

    def create_databases(self) -> None:
        conn = self._admin_conn()
        try:
            with conn.cursor() as cur:
                for name in (self.af_db, self.mlf_db, self.mlf_auth_db):
                    cur.execute(f'CREATE DATABASE "{name}"')
                    self.databases.append(name)
        finally:
            conn.close()

    def drop_databases(self) -> None:
        if not self.databases:
            return
        conn = self._admin_conn()
        try:
            with conn.cursor() as cur:
                for name in list(self.databases):
                    cur.execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = %s AND pid <> pg_backend_pid()",
                        (name,),
                    )
                    cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
                    self.databases.remove(name)
        finally:
            conn.close()

    def database_exists(self, name: str) -> bool:
        conn = self._admin_conn()
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                return cur.fetchone() is not None
        finally:
            conn.close()

    # ---------------------------------------------------------------- redis
    def redis_keys(self) -> list[bytes]:
        import redis

        client = redis.Redis.from_url(redis_url(), socket_connect_timeout=5)
        return list(client.scan_iter(match=f"{self.key_prefix}*", count=500))

    def delete_redis_keys(self) -> int:
        import redis

        client = redis.Redis.from_url(redis_url(), socket_connect_timeout=5)
        keys = self.redis_keys()
        for i in range(0, len(keys), 500):
            client.delete(*keys[i : i + 500])
        return len(keys)

    # ---------------------------------------------------------------- environment
    def configure(self, mammo_values: dict[str, str]) -> dict[str, str]:
        """Build the environment of every component from MAMMO_* values (set here in
        ``os.environ`` too, so that the test process reads the same settings)."""
        from mammo_pipeline.config import Settings
        from mammo_pipeline.orchestration.airflow_env import airflow_env

        writer, writer_password = self.mlflow_users["writer"]
        values = {
            **mammo_values,
            "mlflow_tracking_uri": self.mlflow_url,
            # every Airflow component runs as the writer (settings_env hands the credentials
            # to the task processes as MLflow's own MLFLOW_TRACKING_USERNAME/PASSWORD)
            "mlflow_tracking_username": writer,
            "mlflow_tracking_password": writer_password,
            # empty: new experiments use the server's proxied artifact store
            "mlflow_artifact_location": "",
        }
        os.environ.update({f"MAMMO_{k.upper()}": v for k, v in values.items()})
        self.settings = Settings()
        passwords = self.root / "airflow-auth" / "passwords.json"
        passwords.parent.mkdir(parents=True, exist_ok=True)
        passwords.write_text(json.dumps({ADMIN_USER: self.password}))
        self.env = airflow_env(
            self.settings,
            sql_alchemy_conn=self.airflow_db_uri,
            executor="CeleryExecutor",
            api_port=self.api_port,
            celery_broker_url=redis_url(),
            celery_result_backend="db+" + self.airflow_db_uri,
            extra={
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
                "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
                "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
                "AIRFLOW__CELERY__WORKER_CONCURRENCY": "1",
                "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__GLOBAL_KEYPREFIX": self.key_prefix,
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
                "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(self.root / "airflow-task-logs"),
                "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
                "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
                # only the run the test triggers: no cron run when the DAG is unpaused
                "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
                "MLFLOW_TRACKING_URI": self.mlflow_url,
                "BENTOML_HOME": str(self.settings.bentoml_store.resolve()),
                "PYTHONUNBUFFERED": "1",
                "TF_CPP_MIN_LOG_LEVEL": "2",
            },
        )
        return self.env

    # ---------------------------------------------------------------- processes
    def run(self, *argv: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """Run a one-shot command (e.g. ``airflow db migrate``) in the stack's environment."""
        return subprocess.run(
            list(argv), env=self.env, capture_output=True, text=True, timeout=timeout,
            cwd=self.root,
        )  # fmt: skip

    def start(
        self,
        name: str,
        argv: list[str],
        env: dict[str, str] | None = None,
        one_shot: bool = False,
    ) -> Component:
        log = self.logs / f"{name}.log"
        with open(log, "ab") as fh:
            proc = subprocess.Popen(
                argv,
                env=self.env if env is None else env,
                cwd=self.root,
                stdin=subprocess.DEVNULL,
                stdout=fh,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group, stopped as a whole
            )
        comp = Component(name, proc, log, one_shot)
        self.components.append(comp)
        return comp

    def mlflow_server_env(self) -> dict[str, str]:
        """The server's environment: the basic-auth app's configuration (as compose's
        ``mlflow`` service: users in their own database, no permission by default) and the
        admin it creates on first start."""
        ini = self.root / "mlflow-auth" / "basic_auth.ini"
        ini.parent.mkdir(parents=True, exist_ok=True)
        ini.write_text(
            "[mlflow]\n"
            "default_permission = NO_PERMISSIONS\n"
            f"database_uri = {self.mlflow_auth_db_uri}\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        )
        admin, admin_password = self.mlflow_users["admin"]
        env = {k: v for k, v in self.env.items() if not k.startswith("MLFLOW_TRACKING_")}
        env.update(
            MLFLOW_AUTH_CONFIG_PATH=str(ini),
            MLFLOW_AUTH_ADMIN_USERNAME=admin,
            MLFLOW_AUTH_ADMIN_PASSWORD=admin_password,
            MLFLOW_FLASK_SERVER_SECRET_KEY=secrets.token_urlsafe(32),
        )
        return env

    def start_mlflow(self) -> Component:
        artifacts = (self.root / "mlartifacts").resolve()
        artifacts.mkdir(parents=True, exist_ok=True)
        return self.start(
            "mlflow",
            [
                str(BIN / "mlflow"), "server",
                "--app-name", "basic-auth",
                "--backend-store-uri", self.mlflow_db_uri,
                "--artifacts-destination", artifacts.as_uri(),
                "--serve-artifacts",
                "--host", "127.0.0.1",
                "--port", str(self.mlflow_port),
                "--workers", "1",
            ],
            env=self.mlflow_server_env(),
        )  # fmt: skip

    def start_mlflow_auth_init(self) -> Component:
        """``docker/mlflow_auth_init.py`` as the admin, with the stack's users (it waits for
        the server itself); see :meth:`wait_one_shot`."""
        env = {k: v for k, v in self.env.items() if not k.startswith("MLFLOW_")}
        admin, admin_password = self.mlflow_users["admin"]
        env.update(
            MLFLOW_TRACKING_URI=self.mlflow_url,
            MLFLOW_TRACKING_USERNAME=admin,
            MLFLOW_TRACKING_PASSWORD=admin_password,
            MAMMO_REGISTERED_MODEL_NAME=self.settings.registered_model_name,
        )
        for role in ("writer", "serving", "reviewer"):
            user, password = self.mlflow_users[role]
            env[f"MLFLOW_{role.upper()}_USER"] = user
            env[f"MLFLOW_{role.upper()}_PASSWORD"] = password
        return self.start(
            "mlflow-auth-init", [sys.executable, str(AUTH_INIT)], env=env, one_shot=True
        )

    def wait_one_shot(self, name: str, timeout: float) -> None:
        """Wait for a one-shot component to exit 0 (raises with its log otherwise)."""
        comp = self.component(name)
        deadline = time.monotonic() + timeout
        while comp.proc.poll() is None and time.monotonic() < deadline:
            self.check_alive()
            time.sleep(0.5)
        if comp.proc.returncode != 0:
            raise RuntimeError(
                f"{name} ended with {comp.proc.returncode} (None: still running after "
                f"{timeout:.0f}s)\n{self.log_tails([name])}"
            )

    def start_airflow(self) -> None:
        airflow = str(BIN / "airflow")
        self.start(
            "airflow-apiserver",
            [
                airflow,
                "api-server",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.api_port),
                "--workers",
                "1",
            ],
        )
        self.start("airflow-scheduler", [airflow, "scheduler"])
        self.start("airflow-dag-processor", [airflow, "dag-processor"])
        self.start(
            "airflow-worker",
            [airflow, "celery", "worker", "--queues", "default,gpu,serving", "--concurrency", "1",
             "--celery-hostname", f"mammo-worker-{self.tag}@%h"],
        )  # fmt: skip

    def component(self, name: str) -> Component:
        return next(c for c in self.components if c.name == name)

    def check_alive(self) -> None:
        dead = [c for c in self.components if c.failed]
        if dead:
            raise RuntimeError(
                "component(s) exited: "
                + ", ".join(f"{c.name} (rc={c.proc.returncode})" for c in dead)
                + "\n"
                + self.log_tails([c.name for c in dead])
            )

    def wait_http(self, url: str, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                with urllib.request.urlopen(url, timeout=5) as resp:
                    if resp.status == 200:
                        return
                    last = f"HTTP {resp.status}"
            except (urllib.error.URLError, OSError) as exc:
                last = str(exc)
            time.sleep(1.0)
        raise TimeoutError(f"{what} did not answer at {url} within {timeout:.0f}s: {last}")

    def log_tails(self, names: list[str] | None = None, lines: int = 25) -> str:
        out = []
        for c in self.components:
            if names is None or c.name in names:
                out.append(f"----- {c.name} ({c.log}) -----\n{c.tail(lines)}")
        return "\n".join(out)

    def stop_processes(self, timeout: float = 20.0) -> list[str]:
        """SIGTERM every component's process group, then SIGKILL whatever is left (the
        groups and any descendant that started a session of its own)."""
        stopped = []
        family: dict[str, list[int]] = {}
        for c in reversed(self.components):
            if c.proc.poll() is None:
                family[c.name] = descendants(c.proc.pid)
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(c.proc.pid, signal.SIGTERM)
                stopped.append(c.name)
        deadline = time.monotonic() + timeout
        for c in self.components:
            with contextlib.suppress(subprocess.TimeoutExpired):
                c.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        for c in self.components:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(c.proc.pid, signal.SIGKILL)
            for pid in family.get(c.name, []):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                c.proc.wait(timeout=10)
        deadline = time.monotonic() + 10
        while self.leftovers() and time.monotonic() < deadline:
            time.sleep(0.2)
        return stopped

    def leftovers(self) -> list[int]:
        """Live processes still in one of the components' process groups."""
        return live_in_groups({c.proc.pid for c in self.components})

    def stop(self) -> list[str]:
        """Stop everything this stack started; collects errors and raises the first one at
        the end, so one failing step does not leave the others running."""
        errors: list[BaseException] = []
        stopped: list[str] = []
        if self.settings is not None:
            try:
                from mammo_pipeline.serving.deploy import stop_service

                stopped += [f"bentoml-{role}" for role in stop_service(self.settings)]
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)
        try:
            stopped += self.stop_processes()
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)
        for step in (self.drop_databases, self.delete_redis_keys):
            try:
                step()
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)
        if errors:
            raise errors[0]
        return stopped

    # ---------------------------------------------------------------- MLflow REST API
    def mlflow_api(
        self, method: str, path: str, role: str | None, body: dict | None = None
    ) -> tuple[int, Any]:
        """Call the MLflow server's REST API as one of :attr:`mlflow_users` (``None``:
        anonymous); GET bodies go in the query string."""
        url = f"{self.mlflow_url}{path}"
        data = None
        if body is not None and method == "GET":
            url += "?" + urllib.parse.urlencode(body)
        elif body is not None:
            data = json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if role is not None:
            user, password = self.mlflow_users[role]
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                raw = resp.read()
                return resp.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")[:500]

    def mlflow_env(self, role: str) -> dict[str, str]:
        """The stack's environment with MLflow's own credentials of ``role``."""
        user, password = self.mlflow_users[role]
        return {**self.env, "MLFLOW_TRACKING_USERNAME": user, "MLFLOW_TRACKING_PASSWORD": password}

    # ---------------------------------------------------------------- REST API
    def token(self) -> str:
        if self._token is None:
            body = json.dumps({"username": ADMIN_USER, "password": self.password}).encode()
            req = urllib.request.Request(
                f"{self.api_url}/auth/token", data=body, method="POST",
                headers={"Content-Type": "application/json"},
            )  # fmt: skip
            with urllib.request.urlopen(req, timeout=30) as resp:
                self._token = json.loads(resp.read())["access_token"]
        return self._token

    def api(self, method: str, path: str, body: dict | None = None) -> tuple[int, Any]:
        """Call the Airflow REST API (``/api/v2/...``) with a bearer token."""
        req = urllib.request.Request(
            f"{self.api_url}{path}",
            data=None if body is None else json.dumps(body).encode(),
            method=method,
            headers={"Authorization": f"Bearer {self.token()}",
                     "Content-Type": "application/json"},
        )  # fmt: skip
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                raw = resp.read()
                return resp.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                return exc.code, json.loads(raw)
            except ValueError:
                return exc.code, raw.decode(errors="replace")
