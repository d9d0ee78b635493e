"""docker-compose.yml checked without a Docker engine: it parses, validates against the
Compose Specification's JSON schema (vendored), every command it runs is a real entry point
of the project with valid arguments, every build context and Dockerfile exists, the GPU
worker listens on queue ``gpu`` with an NVIDIA device reservation, health checks and start
order are in place, and secrets come only from ``.env`` (``.env.example`` lists them all).

The prediction service is published only through the nginx reverse proxy: its config
(``docker/nginx.conf``) is parsed by nginx's own parser (``crossplane``) and checked against
the service's limits and the compose wiring; where an ``nginx`` binary is installed it also
passes ``nginx -t`` and is run in front of a stand-in backend (limits, JSON errors, headers).

The vendored schema ``docker/compose-spec.schema.json`` is ``schemas/compose.schema.json`` of
the npm package ``dclint`` 3.1.0 (MIT; its ``update-compose-schema`` script downloads it from
the compose-spec/compose-spec repository), copied unchanged; ``SCHEMA_SHA256`` pins it.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.scripts import load_script

REPO = Path(__file__).resolve().parents[1]
COMPOSE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"
SCHEMA = REPO / "docker" / "compose-spec.schema.json"
SCHEMA_SOURCE = "npm: dclint@3.1.0, package/schemas/compose.schema.json (compose-spec schema)"
SCHEMA_SHA256 = "46b7d35f19dd93a05f8fea530291bf84d881c1791ec167ecf0e6fb94e639d496"

REQUIRED_SERVICES = {
    "postgres", "redis", "airflow-init", "airflow-apiserver", "airflow-scheduler",
    "airflow-dag-processor", "airflow-triggerer", "airflow-worker", "airflow-worker-gpu",
    "mlflow", "mlflow-init", "bentoml", "proxy", "prometheus", "grafana",
}  # fmt: skip
MUST_HAVE_HEALTHCHECK = {
    "postgres", "redis", "airflow-apiserver", "airflow-scheduler", "mlflow", "bentoml",
    "airflow-dag-processor", "airflow-triggerer", "airflow-worker", "airflow-worker-gpu",
    "proxy", "prometheus", "grafana",
}  # fmt: skip
PROJECT_PROGRAMS = {"airflow", "mlflow", "mammo", "bentoml"}
# ``python SCRIPT`` only for a script of the repository mounted by a compose config
SCRIPT_PROGRAMS = {"python"}
# the only other programs a shell script of ours may run (airflow-init)
SHELL_UTILITIES = {"set", "mkdir", "umask", "printf", "echo", "exec"}
# programs allowed in health checks of our image, besides the project's
HEALTHCHECK_PROGRAMS = {"curl", "celery"}
SECRET_KEY = re.compile(r"PASSWORD|SECRET|FERNET|API_KEY|TOKEN|ACCESS_KEY", re.I)
NOT_A_SECRET = re.compile(r"_FILE$")  # a path to a secret, not the secret
VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


# ------------------------------------------------------------------------------ loading
@cache
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


@cache
def env_example() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep, f".env.example: not KEY=VALUE: {line!r}"
        values[key.strip()] = value.strip()
    return values


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's variable interpolation (``${V}``, ``${V:-d}``, ``${V-d}``, ``${V:?e}``,
    ``$$``) with ``env`` as the ``.env`` file."""

    def sub(m: re.Match[str]) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3)
        if op in (":-", "-"):
            present = name in env and (env[name] != "" or op == "-")
            return env[name] if present else arg
        if op in (":?", "?"):
            if name not in env or (op == ":?" and env[name] == ""):
                raise AssertionError(f"required variable {name} is unset: {arg}")
        return env.get(name, "")

    return VAR.sub(sub, value.replace("$$", "\0")).replace("\0", "$")


def walk_strings(node: Any, path: str = ""):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from walk_strings(v, f"{path}.{k}" if path else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from walk_strings(v, f"{path}[{i}]")
    elif isinstance(node, str):
        yield path, node


def our_services() -> dict[str, dict]:
    """Services built from the project's Dockerfile (the rest are pinned upstream images)."""
    return {n: s for n, s in compose()["services"].items() if "build" in s}


def as_argv(command: Any) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else [str(c) for c in command]


def split_commands(argv: list[str]) -> list[list[str]]:
    """The programs a command runs: itself, or each simple command of a ``bash -c`` script
    (lines and ``&&``/``||``/``;`` lists)."""
    if argv[:1] in (["bash"], ["sh"]) and "-c" in argv:
        script = argv[argv.index("-c") + 1]
        out = []
        for line in script.splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            for part in re.split(r"&&|\|\||;", line):
                words = shlex.split(part.split(">", 1)[0] if part.lstrip().startswith("printf")
                                    else part)  # fmt: skip
                if words:
                    out.append(words)
        return out
    return [argv]


def healthcheck_argvs(service: dict) -> list[list[str]]:
    test = (service.get("healthcheck") or {}).get("test")
    if not test:
        return []
    if isinstance(test, str):
        return [shlex.split(test)]
    kind, rest = test[0], test[1:]
    if kind == "CMD-SHELL":
        return [shlex.split(p) for p in re.split(r"\|\||&&|\|", rest[0]) if p.strip()]
    return [list(rest)] if kind == "CMD" else []


def all_program_argvs(env: dict[str, str]) -> list[tuple[str, list[str]]]:
    """(service, argv) of every project program run by a command of our services."""
    out = []
    for name, svc in our_services().items():
        if "command" not in svc:
            continue
        argv = [interpolate(a, env) for a in as_argv(svc["command"])]
        for cmd in split_commands(argv):
            out.append((name, cmd))
    return out


# ------------------------------------------------------------------------------ CLIs
@cache
def airflow_parse_errors(argvs_json: str) -> dict[str, str]:
    """Parse each argv with Airflow's own CLI parser (no command runs), in a subprocess so
    that Airflow's configuration is not loaded into the test process."""
    code = r"""
import json, sys, io, contextlib
from airflow.cli.cli_parser import get_parser
parser = get_parser()
errors = {}
for argv in json.loads(sys.stdin.read()):
    buf = io.StringIO()
    try:
        with contextlib.redirect_stderr(buf), contextlib.redirect_stdout(buf):
            ns = parser.parse_args(argv)
        if not hasattr(ns, "func"):
            errors[" ".join(argv)] = "not a command"
    except SystemExit:
        errors[" ".join(argv)] = buf.getvalue().strip().splitlines()[-1:]
print(json.dumps(errors))
"""
    import tempfile

    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "AIRFLOW_HOME": home, "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
        r = subprocess.run(
            [sys.executable, "-c", code], input=argvs_json, capture_output=True, text=True,
            timeout=120, env=env,
        )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def click_check(group: Any, prog: str, args: list[str]) -> str | None:
    """Resolve ``args`` through a click group down to a command and parse its options
    (no callback runs); returns an error message or ``None``."""
    cmd, rest, name = group, list(args), prog
    while hasattr(cmd, "get_command") and hasattr(cmd, "list_commands"):  # a group
        if not rest or rest[0].startswith("-"):
            return f"{name}: a subcommand is required"
        sub = cmd.get_command(cmd.context_class(cmd), rest[0])
        if sub is None:
            return f"{name}: no such command {rest[0]!r}"
        cmd, name, rest = sub, f"{name} {rest[0]}", rest[1:]
    try:
        cmd.make_context(name, rest)
    except Exception as exc:  # click's (or typer's bundled click's) usage errors
        fmt = getattr(exc, "format_message", None)
        return f"{name}: {type(exc).__name__}: {fmt() if fmt else exc}"
    return None


def cli_group(program: str) -> Any:
    if program == "mammo":
        import typer

        from mammo_pipeline.cli.main import app

        return typer.main.get_command(app)
    if program == "mlflow":
        from mlflow.cli import cli

        return cli
    if program == "bentoml":
        from bentoml_cli.cli import cli

        return cli
    raise KeyError(program)


# ------------------------------------------------------------------------------ tests
def test_vendored_schema_is_the_recorded_file():
    digest = hashlib.sha256(SCHEMA.read_bytes()).hexdigest()
    assert digest == SCHEMA_SHA256, f"{SCHEMA} changed; re-vendor from {SCHEMA_SOURCE}"
    assert json.loads(SCHEMA.read_text())["title"] == "Compose Specification"


def test_compose_file_validates_against_the_compose_specification():
    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(compose()), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors[:20])


def test_schema_really_rejects_a_broken_file():
    """Guard against a schema that accepts anything."""
    schema = json.loads(SCHEMA.read_text())
    broken = {"services": {"x": {"image": "y", "depends_on": {"z": {"condition": "ready"}}}}}
    assert list(jsonschema.Draft7Validator(schema).iter_errors(broken))
    broken = {"services": {"x": {"image": "y", "helthcheck": {}}}}
    assert list(jsonschema.Draft7Validator(schema).iter_errors(broken))


def test_required_services_and_volumes():
    services = compose()["services"]
    assert REQUIRED_SERVICES <= set(services), REQUIRED_SERVICES - set(services)
    volumes = set(compose().get("volumes") or {})
    for needed in ("postgres-data", "mammo-data", "mlflow-artifacts", "airflow-logs"):
        assert needed in volumes
    mounts = {n: {str(v).split(":")[0] for v in s.get("volumes", [])} for n, s in services.items()}
    assert "mlflow-artifacts" in mounts["mlflow"]
    assert "postgres-data" in mounts["postgres"]
    for worker in ("airflow-worker", "airflow-worker-gpu"):
        assert {"mammo-data", "airflow-logs"} <= mounts[worker], mounts[worker]


def test_health_checks_and_start_order():
    services = compose()["services"]
    for name in MUST_HAVE_HEALTHCHECK:
        assert services[name].get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
    for name, svc in services.items():
        for dep, spec in (svc.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            if spec.get("condition") == "service_healthy":
                assert services[dep].get("healthcheck"), f"{name} waits for {dep}'s health"
    airflow = [n for n in services if n.startswith("airflow-") and n != "airflow-init"]
    for name in airflow:
        deps = services[name]["depends_on"]
        assert deps["postgres"]["condition"] == "service_healthy", name
        assert deps["redis"]["condition"] == "service_healthy", name
        assert deps["airflow-init"]["condition"] == "service_completed_successfully", name
    for name in ("airflow-worker", "airflow-worker-gpu"):
        deps = services[name]["depends_on"]
        assert deps["airflow-apiserver"]["condition"] == "service_healthy"
        assert deps["mlflow"]["condition"] == "service_healthy"
    assert services["mlflow"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["bentoml"]["depends_on"]["mlflow"]["condition"] == "service_healthy"
    init_deps = services["airflow-init"]["depends_on"]
    assert {"postgres", "redis"} <= set(init_deps)


def test_build_contexts_and_dockerfiles_exist():
    assert our_services(), "no service is built from the project"
    for name, svc in our_services().items():
        build = svc["build"]
        if isinstance(build, str):
            build = {"context": build}
        context = (REPO / build.get("context", ".")).resolve()
        assert context.is_dir(), f"{name}: build context {context} does not exist"
        dockerfile = context / build.get("dockerfile", "Dockerfile")
        assert dockerfile.is_file(), f"{name}: {dockerfile} does not exist"
        text = dockerfile.read_text()
        for arg in build.get("args") or {}:
            assert re.search(rf"^ARG {arg}\b", text, re.M), f"{name}: ARG {arg} not declared"


def test_dockerfile_is_slim_non_root_and_installs_from_the_lock():
    text = (REPO / "docker" / "Dockerfile").read_text()
    assert re.search(r"^ARG PYTHON_VERSION=3\.11$", text, re.M)
    assert "FROM python:${PYTHON_VERSION}-slim" in text
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1] not in ("root", "0"), users
    assert 'pip install -c requirements.lock -e ".[${TF_EXTRA}]"' in text
    assert re.search(r"^ARG TF_EXTRA=cpu$", text, re.M)
    extras = {a["TF_EXTRA"] for s in our_services().values() if (a := s["build"].get("args"))}
    assert extras == {"cpu", "gpu"}, extras
    pyproject = (REPO / "pyproject.toml").read_text()
    assert re.search(r"^cpu = \[", pyproject, re.M) and re.search(r"^gpu = \[", pyproject, re.M)
    # every COPY source exists and no secret is baked in
    for src in re.findall(r"^COPY (?!--from)(?:--\S+ )*(.+) \S+$", text, re.M):
        for item in src.split():
            assert (REPO / item).exists(), f"COPY {item}: missing"
    for line in text.splitlines():
        if line.startswith(("ENV", "ARG", "    ")) and SECRET_KEY.search(line.split("=")[0]):
            raise AssertionError(f"secret-like setting baked into the image: {line!r}")
    ignored = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    for path in (".venv", "data", "mlruns", ".demo", ".airflow", ".env"):
        assert path in ignored, f".dockerignore does not exclude {path}"
    for needed in ("pyproject.toml", "requirements.lock", "README.md", "mammo_pipeline",
                   "serving", "dags", "expectations"):  # fmt: skip
        assert needed not in ignored, f".dockerignore excludes {needed}, which the build needs"


def test_gpu_worker_listens_on_queue_gpu_with_an_nvidia_reservation():
    services = compose()["services"]
    gpu = services["airflow-worker-gpu"]
    argv = as_argv(gpu["command"])
    assert argv[:3] == ["airflow", "celery", "worker"], argv
    queues = argv[argv.index("--queues") + 1].split(",")
    assert "gpu" in queues, queues
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", [])
               for d in devices), devices  # fmt: skip
    assert gpu["build"]["args"]["TF_EXTRA"] == "gpu"
    cpu = as_argv(services["airflow-worker"]["command"])
    assert "default" in cpu[cpu.index("--queues") + 1].split(",")
    # the queue and pool the DAG uses are the ones the stack provides
    from mammo_pipeline.orchestration.params import GPU_POOL, GPU_QUEUE

    assert GPU_QUEUE == "gpu"
    init = " ".join(as_argv(services["airflow-init"]["command"]))
    assert f"airflow pools set {GPU_POOL} " in init


def test_every_command_is_a_real_entry_point_of_the_project():
    env = env_example()
    airflow_argvs = []
    problems = []
    for name, svc in our_services().items():
        assert "command" in svc, f"{name}: no command (the image's default is only --help)"
        assert "entrypoint" not in svc, f"{name}: overrides the image's entrypoint"
    for name, argv in all_program_argvs(env):
        program = argv[0]
        if program in SHELL_UTILITIES:
            continue
        if program in SCRIPT_PROGRAMS:
            problems += mounted_script_problems(name, argv)
            continue
        if program not in PROJECT_PROGRAMS:
            problems.append(f"{name}: runs {program!r}, not a project entry point")
        elif program == "airflow":
            airflow_argvs.append(argv[1:])
        else:
            err = click_check(cli_group(program), program, argv[1:])
            if err:
                problems.append(f"{name}: {err}")
    for name, svc in our_services().items():
        for argv in healthcheck_argvs(svc):
            argv = [interpolate(a, env) for a in argv]
            if argv[0] == "airflow":
                airflow_argvs.append(argv[1:])
            elif argv[0] == "celery":
                app = argv[argv.index("--app") + 1].rsplit(".", 1)[0]
                import importlib.util

                if importlib.util.find_spec(app) is None:
                    problems.append(f"{name}: celery app module {app} not found")
            elif argv[0] not in HEALTHCHECK_PROGRAMS | PROJECT_PROGRAMS:
                problems.append(f"{name}: healthcheck runs {argv[0]!r}")
    assert airflow_argvs, "no airflow command found"
    errors = airflow_parse_errors(json.dumps(airflow_argvs))
    problems += [f"airflow {k}: {v}" for k, v in errors.items()]
    assert not problems, "\n".join(problems)


def mounted_script_problems(service: str, argv: list[str]) -> list[str]:
    """``python SCRIPT``: SCRIPT must be a file of the repository mounted into ``service`` by
    a compose config, and compile."""
    mounted = {
        c["target"]: compose()["configs"][c["source"]].get("file")
        for c in compose()["services"][service].get("configs") or []
    }
    if len(argv) != 2 or argv[1] not in mounted or not mounted[argv[1]]:
        return [f"{service}: {' '.join(argv)} does not run a script mounted from the repo"]
    source = REPO / mounted[argv[1]]
    if not source.is_file():
        return [f"{service}: {source} does not exist"]
    compile(source.read_text(), str(source), "exec")
    return []


def test_command_checker_catches_bad_commands():
    assert click_check(cli_group("mammo"), "mammo", ["serve"]) is None
    assert click_check(cli_group("mammo"), "mammo", ["srve"])
    assert click_check(cli_group("mammo"), "mammo", ["serve", "--nope"])
    assert click_check(cli_group("mlflow"), "mlflow", ["server", "--port", "x"])
    errors = airflow_parse_errors(
        json.dumps(
            [["celery", "worker", "--queues", "gpu"], ["celery", "wroker"], ["scheduler", "--nope"]]
        )
    )
    assert set(errors) == {"celery wroker", "scheduler --nope"}, errors
    assert mounted_script_problems("mlflow-init", ["python", "/opt/mammo-init/nope.py"])
    assert mounted_script_problems("mlflow", ["python", "/etc/mlflow/basic_auth.ini"])


def test_mlflow_is_a_tracking_server_on_postgres_serving_artifacts():
    env = env_example()
    mlflow = compose()["services"]["mlflow"]
    argv = [interpolate(a, env) for a in as_argv(mlflow["command"])]
    assert argv[:2] == ["mlflow", "server"]
    assert "--serve-artifacts" in argv and "--artifacts-destination" in argv
    backend = interpolate(mlflow["environment"]["MLFLOW_BACKEND_STORE_URI"], env)
    assert backend.startswith("postgresql+psycopg2://") and "@postgres:5432/" in backend
    # the databases are made by the postgres init script
    initdb = compose()["configs"]["postgres-init"]["content"]
    postgres_env = compose()["services"]["postgres"]["environment"]
    for database in ("MLFLOW_DB_NAME", "MLFLOW_AUTH_DB_NAME"):
        assert f"-v {database.lower().replace('mlflow_', 'mlf_').replace('_name', '')}=" in initdb
        assert database in postgres_env, database
    assert 'CREATE DATABASE :"mlf_auth_db" OWNER :"mlf_user";' in initdb
    common = compose()["x-airflow-common"]["environment"]
    assert common["MAMMO_MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert common["MAMMO_MLFLOW_ARTIFACT_LOCATION"] == ""  # the server's artifact proxy
    assert common["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert interpolate(common["AIRFLOW__CELERY__BROKER_URL"], env).startswith("redis://")
    assert interpolate(common["AIRFLOW__CELERY__RESULT_BACKEND"], env).startswith("db+postgresql")
    assert common["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"].startswith(
        "http://airflow-apiserver:8080/"
    )


# ------------------------------------------------------------------------------ MLflow auth
def load_auth_init():
    """docker/mlflow_auth_init.py as a module (it is a script, not a package)."""
    return load_script("docker/mlflow_auth_init.py", "mlflow_auth_init")


def mlflow_auth_ini(env: dict[str, str]):
    import configparser

    mlflow = compose()["services"]["mlflow"]
    (cfg,) = [c for c in mlflow["configs"] if c["source"] == "mlflow-basic-auth"]
    assert mlflow["environment"]["MLFLOW_AUTH_CONFIG_PATH"] == cfg["target"]
    parser = configparser.ConfigParser()
    parser.read_string(interpolate(compose()["configs"]["mlflow-basic-auth"]["content"], env))
    return parser["mlflow"]


def test_mlflow_runs_its_basic_auth_app_with_credentials_from_env():
    env = env_example()
    mlflow = compose()["services"]["mlflow"]
    argv = [interpolate(a, env) for a in as_argv(mlflow["command"])]
    assert argv[argv.index("--app-name") + 1] == "basic-auth"
    ini = mlflow_auth_ini(env)
    assert ini["default_permission"] in {"READ", "NO_PERMISSIONS"}, ini["default_permission"]
    assert ini["authorization_function"].endswith(":authenticate_request_basic_auth")
    # users live in PostgreSQL, in their own database; no password in the file (PGPASSWORD)
    auth_db = ini["database_uri"]
    assert auth_db.startswith("postgresql+psycopg2://") and "@postgres:5432/" in auth_db
    netloc = auth_db.split("://", 1)[1].split("@", 1)[0]
    assert ":" not in netloc, "the auth database URI carries a password"
    assert auth_db.rsplit("/", 1)[1] == env["MLFLOW_AUTH_DB_NAME"]
    assert auth_db != interpolate(mlflow["environment"]["MLFLOW_BACKEND_STORE_URI"], env)
    raw = mlflow["environment"]
    for key, var in [
        ("PGPASSWORD", "MLFLOW_DB_PASSWORD"),
        ("MLFLOW_AUTH_ADMIN_USERNAME", "MLFLOW_ADMIN_USER"),
        ("MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_ADMIN_PASSWORD"),
        ("MLFLOW_FLASK_SERVER_SECRET_KEY", "MLFLOW_FLASK_SECRET_KEY"),
    ]:
        assert raw[key].startswith("${" + var), (key, raw[key])
    # the admin's password reaches only the server and the one-shot that creates the users
    holders = {
        name for name, svc in compose()["services"].items()
        if any("MLFLOW_ADMIN_PASSWORD" in v for _, v in walk_strings(svc.get("environment")))
    }  # fmt: skip
    assert holders == {"mlflow", "mlflow-init"}, holders


def test_each_mlflow_client_has_its_own_user():
    services = compose()["services"]
    init = services["mlflow-init"]
    assert as_argv(init["command"]) == ["python", init["configs"][0]["target"]]
    assert init["depends_on"]["mlflow"]["condition"] == "service_healthy"
    assert init["environment"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert init["environment"]["MLFLOW_TRACKING_USERNAME"].startswith("${MLFLOW_ADMIN_USER")
    for role in ("WRITER", "SERVING", "REVIEWER"):
        for part in ("USER", "PASSWORD"):
            value = init["environment"][f"MLFLOW_{role}_{part}"]
            assert value.startswith(f"${{MLFLOW_{role}_{part}"), value
    # MLflow's own variables (MLflow's client reads them in-process; children inherit them)
    expected = {
        "airflow-worker": "WRITER", "airflow-worker-gpu": "WRITER", "bentoml": "SERVING",
    }  # fmt: skip
    for name, svc in services.items():
        user = (svc.get("environment") or {}).get("MLFLOW_TRACKING_USERNAME")
        password = (svc.get("environment") or {}).get("MLFLOW_TRACKING_PASSWORD")
        if name == "mlflow-init":
            continue
        if name not in expected:
            assert user is None and password is None, f"{name} has MLflow credentials"
            continue
        role = expected[name]
        assert user.startswith(f"${{MLFLOW_{role}_USER"), (name, user)
        assert password.startswith(f"${{MLFLOW_{role}_PASSWORD"), (name, password)
        assert services[name]["depends_on"]["mlflow-init"]["condition"] == (
            "service_completed_successfully"
        )
        assert services[name]["environment"]["MAMMO_MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    # the read-only serving host leaves its deploy records to a writer (record_deploy)
    assert services["bentoml"]["environment"]["MAMMO_DEPLOY_RECORDS_REGISTRY"] == "false"
    assert "MAMMO_DEPLOY_RECORDS_REGISTRY" not in services["airflow-worker"]["environment"]


def test_auth_init_grants_and_refuses_placeholders():
    init = load_auth_init()
    model = "mammo-vgg16"
    levels = {"READ": 1, "EDIT": 3, "MANAGE": 4}

    def best(role: str, resource_type: str) -> int:
        return max(
            (levels[g.permission] for g in init.grants(role, model)
             if g.resource_type == resource_type and g.pattern in ("*", model)),
            default=0,
        )  # fmt: skip

    assert best("serving", "registered_model") == levels["READ"]
    assert best("serving", "experiment") == levels["READ"]
    assert best("writer", "registered_model") == best("writer", "experiment") == levels["MANAGE"]
    assert best("reviewer", "registered_model") == levels["MANAGE"]
    assert best("reviewer", "experiment") == levels["READ"]
    # .env.example's values are placeholders: the init refuses them
    env = {**env_example(), "MLFLOW_TRACKING_USERNAME": env_example()["MLFLOW_ADMIN_USER"]}
    with pytest.raises(init.InitError, match="placeholder"):
        init.users_from_env(env)
    good = {k: ("x" * 20 + k if k.endswith("_PASSWORD") else v) for k, v in env.items()}
    users = init.users_from_env(good)
    assert set(users) == {"writer", "serving", "reviewer"}
    with pytest.raises(init.InitError, match="shorter"):
        init.users_from_env({**good, "MLFLOW_SERVING_PASSWORD": "short"})
    with pytest.raises(init.InitError, match="distinct"):
        init.users_from_env({**good, "MLFLOW_SERVING_USER": good["MLFLOW_WRITER_USER"]})
    with pytest.raises(init.InitError, match="MLFLOW_REVIEWER_USER"):
        init.users_from_env({k: v for k, v in good.items() if k != "MLFLOW_REVIEWER_USER"})


def published(env: dict[str, str]) -> dict[str, list[tuple[str, str]]]:
    """``{service: [(host_ip, host_port), ...]}`` of every published port."""
    out = {}
    for name, svc in compose()["services"].items():
        for mapping in svc.get("ports") or []:
            parts = interpolate(str(mapping), env).split(":")
            assert len(parts) == 3, f"{name}: {mapping} publishes on every address"
            out.setdefault(name, []).append((parts[0], parts[1]))
    return out


def test_every_port_is_published_on_loopback_by_default():
    env = env_example()
    ports = published(env)
    assert set(ports) == {"mlflow", "airflow-apiserver", "proxy", "prometheus", "grafana"}, ports
    for without_bind in (env, {k: v for k, v in env.items() if not k.endswith("_BIND")}):
        for name, pairs in published(without_bind).items():
            assert all(ip == "127.0.0.1" for ip, _ in pairs), (name, pairs)
    assert ports["mlflow"] == [("127.0.0.1", env["MLFLOW_PORT"])]
    assert ports["airflow-apiserver"] == [("127.0.0.1", env["AIRFLOW_API_PORT"])]
    # the variables really move them
    moved = published({**env, "MAMMO_MLFLOW_BIND": "0.0.0.0", "MAMMO_AIRFLOW_BIND": "10.0.0.5"})
    assert moved["mlflow"] == [("0.0.0.0", env["MLFLOW_PORT"])]
    assert moved["airflow-apiserver"] == [("10.0.0.5", env["AIRFLOW_API_PORT"])]


def test_prometheus_and_grafana_are_pinned_loopback_and_provisioned_from_the_repo():
    """The monitoring services (docs/monitoring.md "Dashboards"): upstream images pinned to a
    release, published on 127.0.0.1 only, configuration mounted from docker/, credentials only
    from .env; the prediction log's store is set where predictions are logged or read."""
    services = compose()["services"]
    env = env_example()
    for name, repo in (("prometheus", "prom/prometheus"), ("grafana", "grafana/grafana")):
        svc = services[name]
        image, _, tag = svc["image"].partition(":")
        assert image == repo and re.match(r"^v?\d+\.\d+\.\d+$", tag), svc["image"]
        assert "build" not in svc
        for mapping in svc["ports"]:
            assert interpolate(mapping, {}).startswith("127.0.0.1:"), mapping
        assert svc["healthcheck"]["test"][:2] == ["CMD", "wget"]
        for cfg in svc["configs"]:
            source = compose()["configs"][cfg["source"]]["file"]
            assert source.startswith("./docker/") and (REPO / source).is_file(), source
    assert published(env)["prometheus"] == [("127.0.0.1", env["PROMETHEUS_PORT"])]
    assert published(env)["grafana"] == [("127.0.0.1", env["GRAFANA_PORT"])]
    # Prometheus reaches the service on the default network, not through the proxy
    assert "serving" not in (services["prometheus"].get("networks") or [])
    # Grafana: its admin and its database role come from .env; the provisioning files read
    # the role's credentials from the container's environment
    graf = services["grafana"]["environment"]
    for key in ("GF_SECURITY_ADMIN_USER", "GF_SECURITY_ADMIN_PASSWORD"):
        assert graf[key].startswith("${") and ":?" in graf[key], key
    assert graf["GRAFANA_DB_PASSWORD"] == "${GRAFANA_DB_PASSWORD}"
    provider = yaml.safe_load((REPO / "docker/grafana/dashboards.yml").read_text())["providers"]
    targets = {c["source"]: c["target"] for c in services["grafana"]["configs"]}
    dash_dir = Path(provider[0]["options"]["path"])
    assert Path(targets["grafana-dashboard-mammo"]).parent == dash_dir
    assert targets["grafana-datasources"].startswith("/etc/grafana/provisioning/datasources/")
    assert targets["grafana-dashboards"].startswith("/etc/grafana/provisioning/dashboards/")
    # the prediction log: PostgreSQL for the service (writes) and the CPU worker (the
    # mammo_monitor DAG reads and purges), with the monitor role's password from .env
    for name in ("bentoml", "airflow-worker"):
        uri = interpolate(services[name]["environment"]["MAMMO_MONITOR_STORE_URI"], env)
        assert uri == (
            f"postgresql://{env['MONITOR_DB_USER']}:{env['MONITOR_DB_PASSWORD']}"
            f"@postgres:5432/{env['MONITOR_DB_NAME']}"
        ), name
    for name in ("airflow-scheduler", "airflow-apiserver", "proxy", "grafana"):
        assert "MAMMO_MONITOR_STORE_URI" not in (services[name].get("environment") or {}), name
    # the postgres init script makes the database, its owner and Grafana's read-only role
    init = compose()["configs"]["postgres-init"]["content"]
    for statement in (
        'CREATE DATABASE :"mon_db" OWNER :"mon_user";',
        'ALTER DEFAULT PRIVILEGES FOR ROLE :"mon_user" IN SCHEMA public GRANT SELECT ON TABLES '
        'TO :"graf_user";',
    ):
        assert statement in init, statement
    assert not re.search(r'GRANT (ALL|INSERT|UPDATE|DELETE)[^;]*"graf_user"', init)


def test_no_literal_secrets_and_env_example_covers_every_variable():
    doc = compose()
    used = set()
    for _, value in walk_strings(doc):
        used |= {m.group(1) for m in VAR.finditer(value.replace("$$", ""))}
    env = env_example()
    missing = used - set(env)
    assert not missing, f".env.example lacks {sorted(missing)}"
    # every secret-like environment value is a ${VAR} reference, never a literal
    for path, value in walk_strings(doc):
        key = path.rsplit(".", 1)[-1]
        if (
            ".environment." in f".{path}"
            and SECRET_KEY.search(key)
            and not NOT_A_SECRET.search(key)
        ):
            assert "${" in value, f"{path} has a literal value"
        for m in re.finditer(r"://[^:/@\s]*:([^@/\s]+)@", value):
            assert m.group(1).startswith("${"), f"{path}: literal password in a URL"
    # the example's secrets are placeholders, and .env itself is never committed
    for key, value in env.items():
        if SECRET_KEY.search(key) and not key.startswith("AWS_"):
            assert "change-me" in value, f".env.example {key} is not a placeholder"
    assert re.search(r"^\.env$", (REPO / ".gitignore").read_text(), re.M)
    # the compose file resolves with the example's values (as `docker compose config` would)
    for _, value in walk_strings(doc):
        interpolate(value, env)


def test_interpolation_helper():
    env = {"A": "1", "E": ""}
    assert interpolate("${A}-${B:-x}-${E:-y}-${E-z}-$$HOME", env) == "1-x-y--$HOME"
    with pytest.raises(AssertionError):
        interpolate("${MISSING:?set it}", env)


# ------------------------------------------------------------------------------ the proxy
NGINX_CONF = REPO / "docker" / "nginx.conf"
NGINX_CONF_TARGET = "/etc/nginx/nginx.conf"
_SIZE = re.compile(r"^(\d+)([kKmMgG]?)$")


def nginx_bytes(size: str) -> int:
    """An nginx size (``21m``, ``512k``, ``1g``, ``100``) in bytes."""
    m = _SIZE.match(size)
    assert m, f"not an nginx size: {size!r}"
    return int(m.group(1)) * {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[m.group(2).lower()]


def nginx_seconds(value: str) -> float:
    m = re.match(r"^(\d+)(ms|s|m)?$", value)
    assert m, f"not an nginx time: {value!r}"
    return int(m.group(1)) * {"ms": 0.001, "s": 1.0, None: 1.0, "m": 60.0}[m.group(2)]


@cache
def nginx_tree() -> list[dict]:
    """docker/nginx.conf parsed by crossplane (nginx's config parser, with its directive
    table: unknown directives, wrong contexts and wrong argument counts are errors)."""
    import crossplane

    parsed = crossplane.parse(str(NGINX_CONF), strict=True, check_ctx=True, check_args=True)
    assert parsed["status"] == "ok", parsed["errors"]
    (config,) = parsed["config"]
    return config["parsed"]


def directives(block: list[dict], name: str) -> list[dict]:
    return [d for d in block if d["directive"] == name]


def one(block: list[dict], name: str) -> list[str]:
    (found,) = directives(block, name)
    return found["args"]


def nginx_server() -> list[dict]:
    (http,) = directives(nginx_tree(), "http")
    (server,) = directives(http["block"], "server")
    return server["block"]


def nginx_locations() -> dict[str, list[dict]]:
    """``{"= /predict": block, "/": block, "@unavailable": block, ...}``"""
    return {" ".join(d["args"]): d["block"] for d in directives(nginx_server(), "location")}


def test_prediction_service_is_published_only_through_the_proxy():
    services = compose()["services"]
    networks = compose().get("networks") or {}
    bento, proxy = services["bentoml"], services["proxy"]
    assert "ports" not in bento, "the BentoML service must not be published"
    assert networks["serving"].get("internal") is True
    on_serving = {n for n, s in services.items() if "serving" in (s.get("networks") or [])}
    assert on_serving == {"bentoml", "proxy"}, on_serving
    # the service keeps the default network (MLflow, Redis, PostgreSQL); the proxy does not
    assert set(bento["networks"]) == {"default", "serving"}
    published_side = set(proxy["networks"]) - {"serving"}
    assert published_side and not any(
        (networks.get(n) or {}).get("internal") for n in published_side
    ), "a container only on internal networks cannot publish a port"
    assert "default" not in proxy["networks"], "the proxy needs no route to the databases"
    # the only published port of the service is the proxy's, on the loopback address
    env = env_example()
    (mapping,) = proxy["ports"]
    host_ip, host_port, container_port = interpolate(mapping, env).split(":")
    assert host_ip == "127.0.0.1"
    assert host_port == env["MAMMO_SERVE_PORT"]
    assert one(nginx_server(), "listen") == [container_port]
    for name, svc in services.items():
        for port in svc.get("ports") or []:
            if "MAMMO_SERVE_PORT" in str(port):
                assert name == "proxy", f"{name} publishes the service port"
    # an upstream image pinned to a release line, with a health check of its own
    image = proxy["image"]
    assert image.startswith("nginx:") and image.split(":")[1] not in ("latest", "stable", "")
    assert proxy["healthcheck"]["test"][:2] == ["CMD", "wget"]
    health_url = proxy["healthcheck"]["test"][-1]
    assert health_url == f"http://127.0.0.1:{container_port}/proxy-healthz"
    assert "= /proxy-healthz" in nginx_locations()
    assert proxy["depends_on"]["bentoml"]["condition"] == "service_started"
    # a read-only container: what nginx writes (pid file, temporary files) is on tmpfs
    if proxy.get("read_only"):
        (pid,) = one(nginx_tree(), "pid")
        writable = [Path(t) for t in proxy["tmpfs"]]
        assert any(Path(pid).is_relative_to(t) for t in writable), pid
        assert Path("/var/cache/nginx") in writable  # the image's compiled-in temp paths
    # the config mounted is the file checked below
    (cfg,) = proxy["configs"]
    assert cfg["target"] == NGINX_CONF_TARGET
    source = compose()["configs"][cfg["source"]]["file"]
    assert (REPO / source).resolve() == NGINX_CONF.resolve()


def test_nginx_config_forwards_to_the_service_with_its_limits():
    from mammo_pipeline.config import Settings
    from serving.service import MULTIPART_OVERHEAD, MammoClassifier

    server, locations = nginx_server(), nginx_locations()
    # where: the bentoml service's live port, looked up per request through Docker's DNS
    services = compose()["services"]
    bento_port = services["bentoml"]["environment"]["MAMMO_SERVE_PORT"]
    assert bento_port in [str(p) for p in services["bentoml"]["expose"]]
    (http,) = directives(nginx_tree(), "http")
    assert one(http["block"], "resolver")[0] == "127.0.0.11"
    (target,) = [d["args"] for d in directives(server, "set")]
    assert target == ["$bentoml_service", f"http://bentoml:{bento_port}"]
    for where in ("= /predict", "= /predict_batch", "/"):
        assert one(locations[where], "proxy_pass") == ["$bentoml_service"], where

    # limits: at least the service's own (it answers the precise 413), at most 1 MiB more
    fields = Settings.model_fields
    upload = fields["max_upload_bytes"].default
    batch = fields["serve_max_batch_size"].default
    expected = {
        "= /predict": upload + MULTIPART_OVERHEAD,
        "= /predict_batch": upload * batch + MULTIPART_OVERHEAD,
    }
    for where, limit in expected.items():
        block = locations[where]
        allowed = nginx_bytes(one(block, "client_max_body_size")[0])
        assert limit <= allowed < limit + (1 << 20), (where, allowed, limit)
        assert one(block, "proxy_request_buffering") == ["off"], where
    assert nginx_bytes(one(server, "client_max_body_size")[0]) <= 1 << 20

    # timeouts: the service's own timeout fires first
    service_timeout = MammoClassifier.config["traffic"]["timeout"]
    for name in ("proxy_read_timeout", "proxy_send_timeout"):
        assert nginx_seconds(one(server, name)[0]) > service_timeout, name

    # errors made by nginx are JSON, like the service's own
    pages = {tuple(d["args"][:-1]): d["args"][-1] for d in directives(server, "error_page")}
    assert pages == {("413", "="): "@too_large", ("502", "504", "="): "@unavailable"}
    for status, page in (("413", "@too_large"), ("503", "@unavailable")):
        code, body = one(locations[page], "return")
        body = body.removesuffix("\\n")  # the newline, as nginx's "\\n" escape
        assert code == status and "error" in json.loads(body)
    assert one(http["block"], "default_type") == ["application/json"]
    assert one(http["block"], "server_tokens") == ["off"]


def test_nginx_parser_really_rejects_a_broken_config(tmp_path: Path):
    """Guard against a parser that accepts anything."""
    import crossplane

    text = NGINX_CONF.read_text()
    mutations = {
        "unknown directive": ("proxy_read_timeout 65s;", "proxy_read_timout 65s;"),
        "argument count": ("listen 8080;", "listen;"),
        "context": ("worker_processes auto;", "worker_processes auto;\nproxy_pass x;"),
        "syntax": ("client_max_body_size 21m;", "client_max_body_size 21m"),
    }
    for what, (old, new) in mutations.items():
        assert old in text, what
        path = tmp_path / "nginx.conf"
        path.write_text(text.replace(old, new, 1))
        parsed = crossplane.parse(str(path), strict=True, check_ctx=True, check_args=True)
        assert parsed["status"] == "failed", f"crossplane accepted a config with: {what}"


NGINX = shutil.which("nginx")
needs_nginx = pytest.mark.skipif(NGINX is None, reason="no nginx binary (apt-get install nginx)")


def render_nginx_conf(tmp: Path, listen_port: int, backend_port: int) -> Path:
    """docker/nginx.conf for a local run: own port, a local backend, pid file under ``tmp``."""
    text = NGINX_CONF.read_text()
    for old, new in (
        ("listen 8080;", f"listen 127.0.0.1:{listen_port};"),
        ("http://bentoml:3000", f"http://127.0.0.1:{backend_port}"),
        ("pid /tmp/nginx.pid;", f"pid {tmp / 'nginx.pid'};"),
    ):
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    path = tmp / "nginx.conf"
    path.write_text(text)
    return path


@needs_nginx
def test_nginx_accepts_the_config(tmp_path: Path):
    conf = render_nginx_conf(tmp_path, 8080, 3000)
    r = subprocess.run(
        [NGINX, "-t", "-q", "-c", str(conf), "-p", str(tmp_path)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr


class _StandIn(http.server.BaseHTTPRequestHandler):
    """The backend behind nginx in the run below: answers what it received, as JSON."""

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        received = 0
        while received < length:
            chunk = self.rfile.read(min(1 << 20, length - received))
            if not chunk:
                break
            received += len(chunk)
        body = json.dumps({
            "path": self.path, "method": self.command, "bytes": received,
            "authorization": self.headers.get("authorization"),
            "x_forwarded_for": self.headers.get("x-forwarded-for"),
        }).encode()  # fmt: skip
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args: Any) -> None:  # quiet
        pass


def _raw_post(port: int, path: str, declared: int) -> tuple[int, dict]:
    """POST with a declared Content-Length and no body: nginx must refuse it from the header."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
            f"Content-Length: {declared}\r\n\r\n".encode()
        )
        data = b""
        while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


@needs_nginx
def test_nginx_in_front_of_a_stand_in_backend(tmp_path: Path):
    import threading

    import httpx

    from mammo_pipeline.common.net import free_port

    backend = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _StandIn)
    threading.Thread(target=backend.serve_forever, daemon=True).start()
    port = free_port()
    conf = render_nginx_conf(tmp_path, port, backend.server_address[1])
    log = (tmp_path / "nginx.log").open("wb")
    proc = subprocess.Popen(
        [NGINX, "-c", str(conf), "-p", str(tmp_path), "-g", "daemon off;"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                if httpx.get(f"{url}/proxy-healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            raise AssertionError((tmp_path / "nginx.log").read_text()[-2000:])

        # probes and GET /model pass through, with the client's headers and address
        resp = httpx.get(f"{url}/model", headers={"Authorization": "Bearer k"})
        seen = resp.json()
        assert resp.status_code == 200 and seen["path"] == "/model"
        assert seen["authorization"] == "Bearer k" and seen["x_forwarded_for"] == "127.0.0.1"

        # a batch upload larger than one image's limit streams through to the service ...
        big = 22 << 20
        resp = httpx.post(f"{url}/predict_batch", content=b"\0" * big, timeout=60)
        assert resp.status_code == 200 and resp.json()["bytes"] == big
        # ... but the same size to /predict, or a batch over its limit, is refused by nginx
        before = httpx.get(f"{url}/livez").json()  # the backend answers; nothing else sent
        assert _raw_post(port, "/predict", big) == (
            413, {"error": "request body over the limit"}
        )  # fmt: skip
        assert _raw_post(port, "/predict_batch", 700 << 20)[0] == 413
        assert _raw_post(port, "/livez", 2 << 20)[0] == 413
        assert before["path"] == "/livez"

        # no service behind it: 503 with a JSON error, not nginx's HTML 502
        backend.shutdown()
        backend.server_close()
        resp = httpx.get(f"{url}/readyz")
        assert resp.status_code == 503
        assert resp.json() == {"error": "no model service is running"}
        assert resp.headers["content-type"].startswith("application/json")
        assert "nginx/" not in resp.headers.get("server", "")  # server_tokens off
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()
