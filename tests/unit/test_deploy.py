"""The deployment files agree with the code: names, images, timeouts, and the Dockerfile's steps."""

from __future__ import annotations

import configparser
import os
import re
import shutil
import signal
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from python_worker.adapters.system.settings_loading import secret_names
from python_worker.bootstrap import Settings, load_settings, setting_names, setting_prefixes
from tests.support.worker_process import clean_environment

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
SETTING_NAMES = setting_names()
SECRETS = secret_names(Settings)
ENV_EXAMPLES = sorted(DEPLOY.glob("*.env.example"))
WORKERS = ("worker-1", "worker-2")
ASSIGNMENT = re.compile(r"^#?([A-Z][A-Z0-9_]*)=(.*)$")


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return loaded


def env_file(path: Path) -> dict[str, str]:
    """KEY=value lines as systemd reads them, plus commented-out `#KEY=value` hints."""
    found = {}
    for line in path.read_text().splitlines():
        match = ASSIGNMENT.match(line.strip())
        if match:
            found[match.group(1)] = match.group(2)
    return found


def active_env(path: Path) -> dict[str, str]:
    return {
        key: value
        for key, value in env_file(path).items()
        if any(line.startswith(f"{key}=") for line in path.read_text().splitlines())
    }


def unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((DEPLOY / "python-worker.service").read_text())
    return parser


def seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(s|min)?", value.strip())
    assert match, f"cannot read a duration from {value!r}"
    return float(match.group(1)) * (60 if match.group(2) == "min" else 1)


STAND_INS = ("stand-in-api", "stand-in-orchestrator")


def test_compose_has_rabbitmq_the_stand_ins_and_two_workers() -> None:
    services = compose()["services"]

    assert set(services) == {"rabbitmq", *STAND_INS, *WORKERS}
    assert services["rabbitmq"]["image"] == "rabbitmq:3.13-management"
    assert "healthcheck" in services["rabbitmq"]
    assert {"5672:5672", "15672:15672"} <= set(services["rabbitmq"]["ports"])
    for name in (*WORKERS, *STAND_INS):
        assert services[name]["build"]["context"] == ".."
        assert (DEPLOY / services[name]["build"]["context"] / "Dockerfile").is_file()


def test_compose_workers_have_distinct_ids_and_wait_for_a_healthy_broker() -> None:
    services = compose()["services"]

    ids = {services[name]["environment"]["WORKER_ID"] for name in WORKERS}
    assert len(ids) == len(WORKERS)
    for name in WORKERS:
        assert services[name]["depends_on"]["rabbitmq"]["condition"] == "service_healthy"


def test_compose_workers_use_only_setting_names_and_point_at_the_other_services() -> None:
    services = compose()["services"]

    for name in WORKERS:
        environment = services[name]["environment"]
        assert set(environment) <= SETTING_NAMES, set(environment) - SETTING_NAMES
        assert environment["RABBITMQ_HOST"] == "rabbitmq"
        assert environment["STATUS_UPDATE_URL"].startswith("http://stand-in-api:8080/")
        # Each stand-in on the port the worker's default URL names (8080 and 8081).
        assert environment["ORCHESTRATOR_URL"] == "http://stand-in-orchestrator:8081"
        for stand_in, url in (
            ("stand-in-api", environment["STATUS_UPDATE_URL"]),
            ("stand-in-orchestrator", environment["ORCHESTRATOR_URL"]),
        ):
            port = urlsplit(url).port
            assert f"{port}:{port}" in services[stand_in]["ports"]
            assert services[stand_in]["command"][-2:] == ["--port", str(port)]


def test_compose_workers_get_longer_to_stop_than_their_grace_period() -> None:
    services = compose()["services"]

    for name in WORKERS:
        grace = float(services[name]["environment"]["SHUTDOWN_GRACE_SECONDS"])
        assert services[name]["stop_signal"] == "SIGTERM"
        assert seconds(services[name]["stop_grace_period"]) > grace


@pytest.mark.parametrize("stand_in", STAND_INS)
def test_compose_stand_in_command_is_one_the_stand_in_accepts(stand_in: str) -> None:
    from devtools import stand_in_api

    command = compose()["services"][stand_in]["command"]

    assert command[:3] == ["python", "-m", "devtools.stand_in_api"]
    # The module's own parser must take these flags (it exits 2 on an unknown one).
    parser_help = subprocess.run(
        [sys.executable, "-m", "devtools.stand_in_api", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
        timeout=60,
    ).stdout
    for flag in (arg for arg in command[3:] if arg.startswith("--")):
        assert flag in parser_help
    assert stand_in_api.STATUS_PATH == "/api/jobs/status"


@pytest.mark.parametrize("path", ENV_EXAMPLES, ids=lambda path: path.name)
def test_env_example_uses_only_setting_names_and_valid_values(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = set(env_file(path))
    for name in os.environ:
        if name.upper().startswith(setting_prefixes()):
            monkeypatch.delenv(name)
    for name, value in active_env(path).items():
        monkeypatch.setenv(name, value)

    assert names <= SETTING_NAMES, names - SETTING_NAMES
    load_settings()  # as the worker reads it: every value accepted, no name taken for a typo


@pytest.mark.parametrize("path", ENV_EXAMPLES, ids=lambda path: path.name)
def test_env_example_sets_no_secret_which_the_unit_gives_as_a_credential(path: Path) -> None:
    names = set(env_file(path))

    # The unit sets NAME_FILE for each; NAME as well would stop the worker at start.
    assert names & SECRETS == set()
    assert {f"{name}_FILE" for name in SECRETS} & names == set()


def test_env_examples_give_each_vm_its_own_worker_id_and_the_outbox_under_var_lib() -> None:
    examples = [active_env(path) for path in ENV_EXAMPLES]

    assert len(examples) >= 2
    assert len({example["WORKER_ID"] for example in examples}) == len(examples)
    for example in examples:
        assert example["STATUS_OUTBOX_DIR"].startswith("/var/lib/python-worker/outbox")


def test_env_examples_name_the_three_cluster_nodes_and_declare_quorum_queues() -> None:
    # docs/operations.md, "A 3-node cluster with quorum queues": classic queues live on one
    # node only, so a cluster of them loses its queues with that node.
    for path in ENV_EXAMPLES:
        example = active_env(path)
        nodes = sorted(host.strip() for host in example["RABBITMQ_HOST"].split(","))

        assert nodes == ["rabbit1.internal", "rabbit2.internal", "rabbit3.internal"], path.name
        assert example["QUEUE_TYPE"] == "quorum", path.name


def test_env_examples_spread_the_vms_over_the_nodes_by_naming_another_one_first() -> None:
    firsts = [active_env(path)["RABBITMQ_HOST"].split(",")[0] for path in ENV_EXAMPLES]

    assert len(set(firsts)) == len(firsts)


def test_unit_waits_longer_than_the_grace_period_before_it_kills() -> None:
    service = unit()["Service"]

    timeout = seconds(service["TimeoutStopSec"])
    for path in ENV_EXAMPLES:
        grace = float(active_env(path).get("SHUTDOWN_GRACE_SECONDS", "30"))
        assert timeout > grace, path.name
    assert service["KillSignal"] == "SIGTERM"
    assert service["Restart"] == "on-failure"


def test_unit_runs_the_installed_cli_as_an_unprivileged_user_with_the_env_file() -> None:
    service = unit()["Service"]

    assert service["User"] not in ("root", "0", "")
    assert service["ExecStart"] == "/opt/python-worker/venv/bin/python-worker run"
    assert service["EnvironmentFile"] == "/etc/python-worker/worker.env"
    assert service["WorkingDirectory"] == "/var/lib/python-worker"
    assert service["NoNewPrivileges"] == "yes"
    assert service["ProtectSystem"] == "strict"
    # The outbox of every example must be inside what ProtectSystem=strict leaves writable.
    writable = service["ReadWritePaths"].split()
    for path in ENV_EXAMPLES:
        outbox = active_env(path)["STATUS_OUTBOX_DIR"]
        assert any(outbox == root or outbox.startswith(root + "/") for root in writable)


def unit_values(key: str) -> list[str]:
    """Every value of a key the [Service] section repeats (configparser keeps only the last)."""
    return [
        line.removeprefix(f"{key}=")
        for line in (DEPLOY / "python-worker.service").read_text().splitlines()
        if line.startswith(f"{key}=")
    ]


def credentials_by_variable() -> dict[str, str]:
    """NAME_FILE -> the credential id it reads from the unit's credentials directory (%d)."""
    found = {}
    for assignment in unit_values("Environment"):
        name, _, value = assignment.partition("=")
        if value.startswith("%d/"):
            found[name] = value.removeprefix("%d/")
    return found


def test_unit_gives_every_secret_as_a_credential_file() -> None:
    by_variable = credentials_by_variable()
    loaded = dict(entry.split(":", 1) for entry in unit_values("LoadCredential"))

    # The secrets of a VM on RabbitMQ; the broker's address is no secret there (RABBITMQ_HOST).
    assert set(by_variable) == {
        "RABBITMQ_PASSWORD_FILE",
        "STATUS_API_TOKEN_FILE",
        "ORCHESTRATOR_TOKEN_FILE",
    }
    assert set(by_variable) <= SETTING_NAMES
    for credential in by_variable.values():
        assert loaded[credential] == f"/etc/python-worker/credentials/{credential}"


def test_unit_lets_the_tokens_be_absent_but_never_the_broker_password() -> None:
    by_variable = credentials_by_variable()
    defaults = dict(entry.split(":", 1) for entry in unit_values("SetCredential"))

    # A lone newline: the worker strips it, and an empty token means none.
    assert defaults == {
        by_variable["STATUS_API_TOKEN_FILE"]: "\\n",
        by_variable["ORCHESTRATOR_TOKEN_FILE"]: "\\n",
    }
    assert by_variable["RABBITMQ_PASSWORD_FILE"] not in defaults


def test_unit_does_not_restart_a_worker_that_cannot_start() -> None:
    service = unit()["Service"]

    # 2: a configuration error; 243: systemd could not load a credential file.
    assert set(service["RestartPreventExitStatus"].split()) == {"2", "243"}


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_unit_file_has_no_unknown_keys_for_systemd(tmp_path: Path) -> None:
    result = subprocess.run(
        ["systemd-analyze", "verify", str(DEPLOY / "python-worker.service")],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )

    # The binary only exists once installed; everything else must be clean.
    problems = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if line.strip() and "is not executable" not in line
    ]
    assert problems == []


def test_install_script_is_valid_bash() -> None:
    subprocess.run(["bash", "-n", str(DEPLOY / "install.sh")], check=True, timeout=30)


def dockerfile_steps() -> list[str]:
    return [line.strip() for line in (ROOT / "Dockerfile").read_text().splitlines() if line.strip()]


def test_dockerfile_installs_the_package_the_way_the_install_test_does() -> None:
    steps = dockerfile_steps()

    assert "COPY requirements.txt pyproject.toml README.md ./" in steps
    assert "COPY src ./src" in steps
    assert "RUN pip install --require-hashes -r requirements.txt \\" in steps
    assert "&& pip install --no-deps . \\" in steps
    assert 'CMD ["python-worker", "run"]' in steps


def locked() -> dict[str, tuple[str, list[str]]]:
    """requirements.txt: normalized name -> (pinned version, its hashes)."""
    found: dict[str, tuple[str, list[str]]] = {}
    text = (ROOT / "requirements.txt").read_text().replace("\\\n", " ")
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        pin, *options = line.split()
        name, _, version = pin.partition("==")
        hashes = [option.removeprefix("--hash=") for option in options if option.startswith("--")]
        found[canonicalize_name(name)] = (version, hashes)
    return found


def test_lock_pins_every_runtime_dependency_to_a_version_the_project_accepts_with_hashes():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = locked()

    for declared in map(Requirement, project["dependencies"]):
        version, hashes = pins[canonicalize_name(declared.name)]
        assert declared.specifier.contains(version), (declared, version)
    for name, (version, hashes) in pins.items():
        assert re.fullmatch(r"[0-9][0-9A-Za-z.+!-]*", version), name
        assert hashes and all(h.startswith("sha256:") for h in hashes), name


def test_lock_is_what_the_test_environment_runs():
    # scripts/venv.sh installs requirements.txt first: the suite tests the locked versions.
    for name, (version, _hashes) in locked().items():
        assert metadata.version(name) == version, name


def test_the_lock_then_worker_py_then_a_non_editable_install_run_as_documented(
    tmp_path: Path,
) -> None:
    # The Dockerfile's steps, without Docker: copy what it copies into a clean directory,
    # install the lock file (hash-checked) into a fresh venv, then the project without deps.
    # In between, the original worker's instructions: `pip install -r requirements.txt` and
    # `python worker.py` from the checkout, nothing else installed.
    app = tmp_path / "app"
    app.mkdir()
    for name in ("requirements.txt", "pyproject.toml", "README.md", "worker.py"):
        shutil.copy2(ROOT / name, app / name)
    shutil.copytree(
        ROOT / "src",
        app / "src",
        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc"),
    )
    shutil.copytree(ROOT / "checkout", app / "checkout", symlinks=True)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    pip = [python, "-m", "pip", "install", "--quiet"]
    environment = {key: value for key, value in clean_environment().items() if key != "PYTHONPATH"}
    environment["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"

    def install(*args: str) -> None:
        done = subprocess.run(
            [*pip, *args],
            cwd=app,
            env=environment,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-3000:]

    install("--require-hashes", "-r", "requirements.txt")
    original = subprocess.Popen(
        [python, "worker.py"],
        cwd=app,
        env=environment | {"WORKER_BROKER": "memory", "STATUS_OUTBOX_DIR": str(tmp_path / "o")},
        stderr=subprocess.PIPE,
        text=True,
    )
    assert original.stderr is not None
    banner = original.stderr.readline()
    started = original.stderr.readline()  # the worker's own line: its signal handlers are set
    original.send_signal(signal.SIGTERM)
    _out, rest = original.communicate(timeout=60)
    assert "python-worker 0+unknown starting: embedded in-memory broker" in banner, banner + rest
    assert "capacity=10" in started, started
    assert original.returncode == 0, rest[-3000:]

    install("--no-deps", ".")
    cli = str(venv / "bin" / "python-worker")
    workdir = tmp_path / "work"  # not the source tree: only the installed package may be used
    workdir.mkdir()

    version = subprocess.run(
        [cli, "--version"],
        check=False,
        cwd=workdir,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )
    demo = subprocess.run(
        [cli, "demo"],
        check=False,
        cwd=workdir,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == "python-worker 0.1.0"
    assert demo.returncode == 0, demo.stderr[-3000:]
    assert "demo:" in demo.stdout
    assert "metrics: processed=" in demo.stdout
    # One namespace: nothing of ours at the top of site-packages but `python_worker`.
    (site_packages,) = (venv / "lib").glob("python*/site-packages")
    ours = {"python_worker", "domain", "application", "adapters", "bootstrap", "devtools"}
    top_level = {path.name.removesuffix(".py") for path in site_packages.iterdir()}
    assert top_level & ours == {"python_worker"}
    assert (site_packages / "python_worker" / "adapters" / "memory" / "demo_jobs.jsonl").exists()
