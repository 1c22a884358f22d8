"""Reading the settings: look-alike names, RABBITMQ_URL, secrets from files, broker nodes."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from python_worker.adapters.rabbitmq.connection import BrokerConfig
from python_worker.adapters.rabbitmq.settings import parse_broker_url
from python_worker.adapters.system import environment
from python_worker.bootstrap import (
    ConfigurationError,
    Settings,
    load_settings,
    setting_names,
    setting_prefixes,
)
from tests.support.rabbitmq_node import RabbitMQNode, RabbitMQNotInstalledError

CANARY = "canary-pw-5e1f"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """None of the worker's variables from the shell that runs the tests."""
    for name in list(os.environ):
        if name.upper().startswith(setting_prefixes()):
            monkeypatch.delenv(name)
    yield


def refusal(monkeypatch: pytest.MonkeyPatch, **variables: str) -> str:
    """The one line load_settings() stops with, given these environment variables."""
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError) as raised:
        load_settings()
    return str(raised.value)


def loaded(monkeypatch: pytest.MonkeyPatch, **variables: str) -> Settings:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    return load_settings()


# --------------------------------------------------------------------------- look-alike names


def test_names_the_setting_meant_when_a_variable_is_misspelt(monkeypatch):
    line = refusal(monkeypatch, WORKER_CAPACTY="3")

    assert line == "unknown setting WORKER_CAPACTY — did you mean WORKER_CAPACITY?"


def test_names_the_secret_file_variable_meant_when_it_is_misspelt(monkeypatch):
    line = refusal(monkeypatch, RABBITMQ_PASWORD_FILE="/run/x")

    assert line == "unknown setting RABBITMQ_PASWORD_FILE — did you mean RABBITMQ_PASSWORD_FILE?"


def test_points_at_the_readme_when_an_unknown_variable_resembles_no_setting(monkeypatch):
    line = refusal(monkeypatch, WORKER_FLAVOUR="mild")

    assert line == (
        "unknown setting WORKER_FLAVOUR — no setting has a name like it; the README's "
        '"Configuration" lists them all'
    )


def test_takes_a_lower_case_look_alike_for_a_typo_when_the_settings_read_any_case(monkeypatch):
    line = refusal(monkeypatch, heartbeat_intervall="5")

    assert line == "unknown setting HEARTBEAT_INTERVALL — did you mean HEARTBEAT_INTERVAL?"


def test_knows_every_settings_field_and_each_secrets_file_variable_when_checking_names():
    fields = {name.upper() for name in Settings.model_fields}
    everything = dict.fromkeys(fields | {"RABBITMQ_PASSWORD_FILE", "STATUS_API_TOKEN_FILE"}, "x")

    unknown = environment.unknown_settings(everything, setting_names(), setting_prefixes())

    assert unknown == []


def test_checks_at_least_the_prefixes_operators_use_when_settings_are_read():
    prefixes = set(setting_prefixes())

    assert prefixes >= {
        "RABBITMQ_",
        "WORKER_",
        "STATUS_",
        "ORCHESTRATOR_",
        "HEARTBEAT_",
        "METRICS_",
        "LOG_",
        "JOB_",
        "SHUTDOWN_",
        "QUEUE_",
        "MAX_",
    }


@pytest.mark.parametrize(
    "name",
    ["RABBITMQ_NODENAME", "RABBITMQ_CONFIG_FILE", "RABBITMQ_MNESIA_BASE", "RABBITMQ_LOGS"],
)
def test_leaves_rabbitmq_servers_own_variables_alone_when_they_share_the_prefix(monkeypatch, name):
    settings = loaded(monkeypatch, **{name: "rabbit@localhost"})

    assert settings.rabbitmq_host == "localhost"


def test_leaves_every_variable_of_the_test_suites_rabbitmq_node_alone_when_checking_names():
    try:
        node = RabbitMQNode()
    except RabbitMQNotInstalledError as exc:
        pytest.skip(f"no rabbitmq-server here to take its environment from: {exc}")
    try:
        node_environment = node._env
    finally:
        node.close()

    unknown = environment.unknown_settings(node_environment, setting_names(), setting_prefixes())

    assert unknown == []


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("RABBITMQ_SERVICE_HOST", "10.0.0.7"),
        ("RABBITMQ_SERVICE_PORT_AMQP", "5672"),
        ("RABBITMQ_PORT_5672_TCP_ADDR", "10.0.0.7"),
        ("ORCHESTRATOR_PORT", "tcp://10.0.0.8:8081"),
        ("JOB_NAME", "nightly-publish"),
    ],
)
def test_leaves_kubernetes_and_jenkins_variables_alone_when_they_share_a_prefix(
    monkeypatch, name, value
):
    settings = loaded(monkeypatch, **{name: value})

    assert settings.worker_capacity == 10


def test_takes_a_port_variable_for_a_typo_when_its_value_is_no_service_link(monkeypatch):
    line = refusal(monkeypatch, WORKER_PORT="9100")

    assert line.startswith("unknown setting WORKER_PORT — ")


# --------------------------------------------------------------------------- RABBITMQ_URL


def test_reads_login_nodes_and_vhost_when_the_broker_is_one_url():
    url = parse_broker_url("amqp://worker:s3cret@rabbit1.internal:5673/jobs")

    assert (url.tls, url.nodes, url.username, url.password, url.vhost) == (
        False,
        [("rabbit1.internal", 5673)],
        "worker",
        "s3cret",
        "jobs",
    )


def test_percent_decodes_user_password_and_vhost_when_they_hold_reserved_characters():
    url = parse_broker_url("amqp://us%40er:p%3Ass%2Fw%40rd@h/%2Fjobs")

    assert (url.username, url.password, url.vhost) == ("us@er", "p:ss/w@rd", "/jobs")


@pytest.mark.parametrize("path", ["", "/", "//", "/%2F", "/%2f"])
def test_uses_the_default_vhost_when_the_url_names_it_in_any_usual_spelling(path):
    url = parse_broker_url(f"amqp://guest:guest@localhost:5672{path}")

    assert url.vhost == "/"


def test_logs_in_as_guest_on_port_5672_when_the_url_names_only_a_host():
    url = parse_broker_url("amqp://rabbit.internal")

    assert (url.nodes, url.username, url.password) == (
        [("rabbit.internal", 5672)],
        "guest",
        "guest",
    )


def test_turns_tls_on_with_port_5671_when_the_scheme_is_amqps():
    url = parse_broker_url("amqps://worker:pw@rabbit.internal/%2F")

    assert (url.tls, url.nodes) == (True, [("rabbit.internal", 5671)])


def test_gives_each_node_its_own_port_when_the_host_list_names_ports():
    url = parse_broker_url("amqp://worker:pw@127.0.0.1:5672,127.0.0.1:5673,rabbit3/%2F")

    assert url.nodes == [("127.0.0.1", 5672), ("127.0.0.1", 5673), ("rabbit3", 5672)]


def test_reads_an_ipv6_node_when_its_address_is_in_brackets():
    url = parse_broker_url("amqp://worker:pw@[::1]:5673,[fe80::2]/%2F")

    assert url.nodes == [("::1", 5673), ("fe80::2", 5672)]


def test_reads_semicolon_separated_urls_as_nodes_of_one_cluster_when_spelt_as_kombu_does():
    url = parse_broker_url("amqp://worker:pw@rabbit1:5672//;amqp://worker:pw@rabbit2:5673//")

    assert (url.nodes, url.vhost) == ([("rabbit1", 5672), ("rabbit2", 5673)], "/")


def test_refuses_semicolon_separated_urls_when_their_passwords_differ(monkeypatch):
    line = refusal(
        monkeypatch, RABBITMQ_URL=f"amqp://worker:{CANARY}@rabbit1;amqp://worker:other@rabbit2"
    )

    assert line.startswith(
        "configuration error: RABBITMQ_URL: the URLs separated by ';' are nodes of one cluster, "
        "with one login and vhost, but URL 2 differs from the first in its password (example: "
    )
    assert CANARY not in line


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        (f"http://worker:{CANARY}@rabbit", "scheme 'http' is not amqp or amqps"),
        (f"worker:{CANARY}@rabbit", "must start with amqp:// or amqps://"),
        (f"amqp://worker:{CANARY}@rabbit:99999/", "node 'rabbit:99999': the port must be"),
        (f"amqp://worker:{CANARY}@rabbit1,,rabbit2/", "a node without a host"),
        (f"amqp://worker:{CANARY}@rabbit/?heartbeat=5", "takes no ?query or #fragment"),
        (f"amqp://worker:{CANARY}/x@rabbit/", "an '@' after the host: percent-encode"),
        (f"amqp://worker:{CANARY}@::1/", "put an IPv6 address in brackets"),
        (f"amqp://:{CANARY}@rabbit/", "the user name before '@' is empty"),
    ],
)
def test_says_what_is_wrong_but_never_the_password_when_the_url_is_bad(monkeypatch, url, problem):
    line = refusal(monkeypatch, RABBITMQ_URL=url)

    assert line.startswith("configuration error: RABBITMQ_URL: ")
    assert problem in line
    assert line.endswith(
        "(example: RABBITMQ_URL=amqp://worker:s3cret@rabbit1.internal:5672,"
        "rabbit2.internal:5672/%2F)"
    )
    assert CANARY not in line


@pytest.mark.parametrize(
    "variable",
    [
        "RABBITMQ_HOST",
        "RABBITMQ_PORT",
        "RABBITMQ_USERNAME",
        "RABBITMQ_PASSWORD",
        "RABBITMQ_VHOST",
        "RABBITMQ_TLS",
    ],
)
def test_refuses_the_url_when_a_separate_broker_variable_is_set_as_well(monkeypatch, variable):
    value = {"RABBITMQ_PORT": "5672", "RABBITMQ_TLS": "false"}.get(variable, "x")

    line = refusal(monkeypatch, RABBITMQ_URL=f"amqp://worker:{CANARY}@rabbit/", **{variable: value})

    shown = f"{variable}[_FILE]" if variable == "RABBITMQ_PASSWORD" else variable
    assert line == (
        f"configuration error: RABBITMQ_URL is set, and so is {shown}: give the broker either "
        "as RABBITMQ_URL or as the separate RABBITMQ_* variables, not both (example: "
        "RABBITMQ_URL=amqp://worker:s3cret@rabbit1.internal:5672,rabbit2.internal:5672/%2F)"
    )


def test_connects_to_each_node_on_its_own_port_when_configured_by_url(monkeypatch):
    settings = loaded(monkeypatch, RABBITMQ_URL="amqps://worker:pw@127.0.0.1:5671,127.0.0.1:5681/")

    config = settings.broker_config(settings.max_delivery_attempts)

    assert config.nodes == [("127.0.0.1", 5671), ("127.0.0.1", 5681)]
    assert [(p.host, p.port) for p in config.parameters()] == config.nodes
    assert (config.username, config.password, config.vhost, config.tls) == (
        "worker",
        "pw",
        "/",
        True,
    )


def test_lists_the_urls_password_among_the_secrets_no_printed_line_shows(monkeypatch):
    settings = loaded(monkeypatch, RABBITMQ_URL=f"amqp://worker:{CANARY}@rabbit/")

    assert CANARY in settings.secrets()


def test_refuses_a_port_in_rabbitmq_host_when_pika_would_take_it_for_part_of_the_name(monkeypatch):
    line = refusal(monkeypatch, RABBITMQ_HOST="rabbit1:5672,rabbit2")

    assert line.startswith(
        "configuration error: RABBITMQ_HOST='rabbit1:5672,rabbit2': 'rabbit1:5672' holds a port: "
    )


# --------------------------------------------------------------------------- BrokerConfig


def test_shows_each_node_with_its_port_but_no_password_when_nodes_differ_in_port():
    config = BrokerConfig(hosts=["a", "b"], ports=[5672, 5673], username="w", password=CANARY)

    assert config.where() == "amqp://w@a:5672,b:5673/"
    assert config.where("b") == "amqp://w@b:5673/"
    assert CANARY not in repr(config)


def test_keeps_its_one_port_form_when_every_node_listens_on_the_same_port():
    config = BrokerConfig(hosts=["a", "b"], port=5673, vhost="/jobs")

    assert config.where() == "amqp://guest@a,b:5673/jobs"
    assert config.nodes == [("a", 5673), ("b", 5673)]


def test_refuses_a_port_list_when_it_does_not_match_the_hosts():
    with pytest.raises(ValueError, match="one port per host"):
        BrokerConfig(hosts=["a", "b"], ports=[5672])


# --------------------------------------------------------------------------- secrets from files


@pytest.mark.parametrize(
    ("variable", "read"),
    [
        ("RABBITMQ_PASSWORD", lambda s: s.rabbitmq_password.get_secret_value()),
        ("STATUS_API_TOKEN", lambda s: s.status_api_token.get_secret_value()),
        ("ORCHESTRATOR_TOKEN", lambda s: s.orchestrator_token.get_secret_value()),
    ],
)
def test_reads_a_secret_without_its_trailing_newline_when_name_file_names_a_file(
    monkeypatch, tmp_path, variable, read
):
    secret = tmp_path / "secret"
    secret.write_text(f"{CANARY}\n")

    settings = loaded(monkeypatch, **{f"{variable}_FILE": str(secret)})

    assert read(settings) == CANARY


def test_strips_only_one_newline_when_a_secret_file_ends_in_several(monkeypatch, tmp_path):
    secret = tmp_path / "secret"
    secret.write_text(f"{CANARY}\n\n")

    settings = loaded(monkeypatch, RABBITMQ_PASSWORD_FILE=str(secret))

    assert settings.rabbitmq_password.get_secret_value() == f"{CANARY}\n"


def test_reads_the_whole_broker_url_from_a_file_when_rabbitmq_url_file_is_set(
    monkeypatch, tmp_path
):
    secret = tmp_path / "url"
    secret.write_text(f"amqp://worker:{CANARY}@rabbit1:5672,rabbit2:5673/%2F\n")

    settings = loaded(monkeypatch, RABBITMQ_URL_FILE=str(secret))

    assert settings.broker_config(5).nodes == [("rabbit1", 5672), ("rabbit2", 5673)]


def test_refuses_a_secret_file_that_cannot_be_read(monkeypatch, tmp_path):
    missing = tmp_path / "missing"

    line = refusal(monkeypatch, STATUS_API_TOKEN_FILE=str(missing))

    assert line == (
        f"configuration error: STATUS_API_TOKEN_FILE='{missing}': cannot be read (No such file "
        "or directory) (example: STATUS_API_TOKEN_FILE=/run/credentials/python-worker.service/"
        "status-api-token)"
    )


def test_refuses_a_secret_given_both_as_a_value_and_as_a_file(monkeypatch, tmp_path):
    secret = tmp_path / "secret"
    secret.write_text(CANARY)

    line = refusal(monkeypatch, ORCHESTRATOR_TOKEN=CANARY, ORCHESTRATOR_TOKEN_FILE=str(secret))

    assert line == (
        f"configuration error: ORCHESTRATOR_TOKEN_FILE='{secret}': set together with "
        "ORCHESTRATOR_TOKEN: give only one (example: ORCHESTRATOR_TOKEN_FILE=/run/credentials/"
        "python-worker.service/orchestrator-token)"
    )


def test_refuses_the_url_when_the_password_comes_from_a_file_as_well(monkeypatch, tmp_path):
    secret = tmp_path / "secret"
    secret.write_text(CANARY)

    line = refusal(
        monkeypatch, RABBITMQ_URL="amqp://worker@rabbit/", RABBITMQ_PASSWORD_FILE=str(secret)
    )

    assert line.startswith(
        "configuration error: RABBITMQ_URL is set, and so is RABBITMQ_PASSWORD[_FILE]: "
    )
    assert CANARY not in line
