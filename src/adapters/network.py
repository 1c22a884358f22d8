"""What a failed connection means, in words an operator can act on: for the preflight checks."""

import socket
import ssl
from collections.abc import Sequence


def describe_network_error(
    exc: BaseException, service: str, ca_setting: str = "a trusted CA"
) -> tuple[str, str]:
    """(problem, fix) for a failure to reach `service`, from whatever pika or requests raised."""
    cause = root_cause(exc)
    if isinstance(cause, socket.gaierror):
        return "host name not resolved", f"check the host name of {service}"
    if isinstance(cause, ConnectionRefusedError):
        return "connection refused", f"start {service}"
    if isinstance(cause, TimeoutError):
        return (
            "connection timed out",
            f"check that {service} is up and that no firewall drops the traffic",
        )
    if isinstance(cause, ssl.SSLCertVerificationError):
        return (
            f"TLS certificate not trusted ({cause.verify_message})",
            f"give the CA that signed the server's certificate ({ca_setting}) and connect by a "
            "name the certificate holds",
        )
    if isinstance(cause, ssl.SSLError):
        return f"TLS handshake failed ({cause})", f"check that {service} speaks TLS on that port"
    text = str(cause)
    detail = f"{type(cause).__name__}: {text}" if text else type(cause).__name__
    return f"unreachable ({detail})", f"check that {service} is up"


def root_cause(exc: BaseException) -> BaseException:
    """The innermost error: pika nests socket errors in args, requests in `__context__`."""
    seen: set[int] = set()
    current = exc
    while id(current) not in seen:
        seen.add(id(current))
        inner = _inner(current)
        if inner is None:
            break
        current = inner
    return current


def _inner(exc: BaseException) -> BaseException | None:
    # pika's AMQPConnectionWorkflowFailed keeps every attempt's error in `exceptions`, its
    # connector errors keep theirs in `exception`.
    errors = getattr(exc, "exceptions", None)
    if isinstance(errors, Sequence) and errors and isinstance(errors[-1], BaseException):
        return errors[-1]
    wrapped = getattr(exc, "exception", None)
    if isinstance(wrapped, BaseException):
        return wrapped
    for arg in exc.args:
        if isinstance(arg, BaseException):
            return arg
        if isinstance(arg, Sequence) and not isinstance(arg, str | bytes):
            for item in arg:
                if isinstance(item, BaseException):
                    return item
    return exc.__cause__ or exc.__context__
