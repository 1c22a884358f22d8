"""The process environment as the settings see it: secrets read from files, and look-alike names."""

import re
from collections.abc import Iterable, Mapping
from pathlib import Path

FOREIGN_NAMES = frozenset(
    {
        # RabbitMQ's own server and CLI scripts (rabbitmq-env, rabbit_env.erl, 3.x/4.x), which
        # share a machine with the worker on a single-host install, and the official Docker
        # image's ENV lines. tests/support/rabbitmq_node.py sets many of them for its node.
        "RABBITMQ_ADVANCED_CONFIG_FILE",
        "RABBITMQ_ALLOW_INPUT",
        "RABBITMQ_BASE",
        "RABBITMQ_BOOT_MODULE",
        "RABBITMQ_CONFIG_FILE",
        "RABBITMQ_CONFIG_FILES",
        "RABBITMQ_CONF_ENV_FILE",
        "RABBITMQ_CONSOLE_LOG",
        "RABBITMQ_CTL_DIST_PORT_MAX",
        "RABBITMQ_CTL_DIST_PORT_MIN",
        "RABBITMQ_CTL_ERL_ARGS",
        "RABBITMQ_DATA_DIR",
        "RABBITMQ_DBG",
        "RABBITMQ_DEFAULT_ALLOC_ARGS",
        "RABBITMQ_DEFAULT_PASS",
        "RABBITMQ_DEFAULT_USER",
        "RABBITMQ_DEFAULT_VHOST",
        "RABBITMQ_DISTRIBUTION_BUFFER_SIZE",
        "RABBITMQ_DIST_PORT",
        "RABBITMQ_ENABLED_PLUGINS",
        "RABBITMQ_ENABLED_PLUGINS_FILE",
        "RABBITMQ_ENV_LOADED",
        "RABBITMQ_ERLANG_COOKIE",
        "RABBITMQ_FEATURE_FLAGS",
        "RABBITMQ_FEATURE_FLAGS_FILE",
        "RABBITMQ_HOME",
        "RABBITMQ_IGNORE_SIGINT",
        "RABBITMQ_IGNORE_SIGINT_FLAG",
        "RABBITMQ_KEEP_PID_FILE_ON_EXIT",
        "RABBITMQ_LOG",
        "RABBITMQ_LOGS",
        "RABBITMQ_LOG_BASE",
        "RABBITMQ_LOG_FF_REGISTRY",
        "RABBITMQ_MAX_NUMBER_OF_ATOMS",
        "RABBITMQ_MAX_NUMBER_OF_PROCESSES",
        "RABBITMQ_MNESIA_BASE",
        "RABBITMQ_MNESIA_DIR",
        "RABBITMQ_MOTD_FILE",
        "RABBITMQ_NODENAME",
        "RABBITMQ_NODE_IP_ADDRESS",
        "RABBITMQ_NODE_ONLY",
        "RABBITMQ_NODE_PORT",
        "RABBITMQ_PGP_KEY_ID",
        "RABBITMQ_PID_FILE",
        "RABBITMQ_PLUGINS_DIR",
        "RABBITMQ_PLUGINS_EXPAND_DIR",
        "RABBITMQ_PRODUCT_NAME",
        "RABBITMQ_PRODUCT_VERSION",
        "RABBITMQ_QUORUM_DIR",
        "RABBITMQ_SCHEDULER_BIND_TYPE",
        "RABBITMQ_SCHEDULER_BUSY_WAIT_THRESHOLD",
        "RABBITMQ_SCRIPTS_DIR",  # also read by tests/support/rabbitmq_node.py
        "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
        "RABBITMQ_SERVER_CODE_PATH",
        "RABBITMQ_SERVER_ERL_ARGS",
        "RABBITMQ_SERVER_START_ARGS",
        "RABBITMQ_SERVICENAME",
        "RABBITMQ_START_RABBIT",
        "RABBITMQ_STREAM_DIR",
        "RABBITMQ_UPGRADE_LOG",
        "RABBITMQ_USE_LONGNAME",
        "RABBITMQ_VERSION",
        # Jenkins, in the environment of every build step (`python-worker publish` in a job).
        "JOB_BASE_NAME",
        "JOB_DISPLAY_URL",
        "JOB_NAME",
        "JOB_URL",
    }
)
"""Names with a settings prefix that belong to other software: never reported as typos."""

# Kubernetes puts "service links" of every Service in the namespace into each container:
# a Service `rabbitmq` gives RABBITMQ_SERVICE_HOST, RABBITMQ_SERVICE_PORT[_<name>],
# RABBITMQ_PORT=tcp://10.0.0.7:5672 and RABBITMQ_PORT_5672_TCP[_PROTO|_PORT|_ADDR].
_SERVICE_LINK = re.compile(
    r"[A-Z0-9_]+_(SERVICE_HOST|SERVICE_PORT(_[A-Z0-9_]+)?|PORT_\d+_(TCP|UDP|SCTP)(_PROTO|_PORT|_ADDR)?)"
)
_SERVICE_LINK_PORT = re.compile(r"[A-Z0-9_]+_PORT")
_SERVICE_LINK_ADDRESS = re.compile(r"(tcp|udp|sctp)://\S+")

CLOSE_ENOUGH = 0.8
"""difflib ratio from which a known name is offered: typos yes, a merely similar name no."""


class SecretFileError(Exception):
    """Raised when a NAME_FILE variable cannot give its secret; `problem` says why."""

    def __init__(self, variable: str, path: str, problem: str) -> None:
        super().__init__(f"{variable}={path!r}: {problem}")
        self.variable = variable
        self.path = path
        self.problem = problem


def is_foreign(name: str, value: str) -> bool:
    """Whether `name` is known to belong to other software (see FOREIGN_NAMES)."""
    if name in FOREIGN_NAMES or _SERVICE_LINK.fullmatch(name):
        return True
    return bool(_SERVICE_LINK_PORT.fullmatch(name) and _SERVICE_LINK_ADDRESS.fullmatch(value))


def unknown_settings(
    environ: Mapping[str, str], known: Iterable[str], prefixes: Iterable[str]
) -> list[str]:
    """Names in `environ` with one of `prefixes` that are no `known` name, sorted.

    Upper-cased, as the settings read names whatever their case.
    """
    known_names, starts = set(known), tuple(prefixes)
    return sorted(
        name.upper()
        for name, value in environ.items()
        if name.upper().startswith(starts)
        and name.upper() not in known_names
        and not is_foreign(name.upper(), value)
    )


def closest_name(name: str, known: Iterable[str]) -> str | None:
    """The known name `name` most likely misspells, if one is close enough."""
    import difflib  # only when a name is unknown, which stops start-up anyway

    matches = difflib.get_close_matches(name, list(known), n=1, cutoff=CLOSE_ENOUGH)
    return matches[0] if matches else None


def read_secret_files(environ: Mapping[str, str], secrets: Iterable[str]) -> dict[str, str]:
    """NAME -> the content of the file NAME_FILE names, for each of `secrets` that has one.

    The convention of Docker secrets and systemd's LoadCredential=: the secret stays out of
    the environment (and of `ps e`, `/proc/<pid>/environ`, `systemctl show`). One trailing
    newline, as `echo` and editors leave it, is not part of the secret.
    """
    given = {name.upper(): value for name, value in environ.items()}
    values = {}
    for name in secrets:
        variable = f"{name}_FILE"
        path = given.get(variable)
        if path is None:
            continue
        if name in given:
            raise SecretFileError(variable, path, f"set together with {name}: give only one")
        if not path:
            raise SecretFileError(variable, path, "is empty: name the file that holds the secret")
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise SecretFileError(
                variable, path, f"cannot be read ({exc.strerror or exc})"
            ) from exc
        except UnicodeDecodeError as exc:
            raise SecretFileError(variable, path, "is not UTF-8 text") from exc
        values[name] = (
            text.removesuffix("\r\n") if text.endswith("\r\n") else text.removesuffix("\n")
        )
    return values
