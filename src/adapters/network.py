"""What a failed connection means, in words an operator can act on: for the preflight checks."""

import socket
import ssl
from collections.abc import Sequence


def describe_network_error(
    exc: BaseException,
    service: str,
    ca_setting: str | None = None,
    client_cert_setting: str | None = None,
) -> tuple[str, str]:
    """(problem, fix) for a failure to reach `service`, from whatever pika or requests raised.

    `ca_setting` names the setting that gives the CA bundle to trust, `client_cert_setting`
    the one(s) that give a client certificate: the fixes for TLS errors suggest them.
    """
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
        return _describe_verification(cause, ca_setting)
    if isinstance(cause, ssl.SSLError):
        return _describe_tls_alert(cause, service, client_cert_setting)
    text = str(cause)
    detail = f"{type(cause).__name__}: {text}" if text else type(cause).__name__
    return f"unreachable ({detail})", f"check that {service} is up"


# OpenSSL's X509_V_ERR_* codes that are not about whom to trust.
_HOSTNAME_MISMATCH = 62
_IP_ADDRESS_MISMATCH = 64
_CERT_NOT_YET_VALID = 9
_CERT_HAS_EXPIRED = 10

# Alerts a server sends when it wants a client certificate and got none (TLS 1.3), or refuses
# the one it got. TLS 1.2 servers say only "handshake failure" when none came.
_CERTIFICATE_REQUIRED = "TLSV13_ALERT_CERTIFICATE_REQUIRED"
_CERTIFICATE_REFUSED = {
    "SSLV3_ALERT_BAD_CERTIFICATE",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN",
    "SSLV3_ALERT_CERTIFICATE_EXPIRED",
    "SSLV3_ALERT_CERTIFICATE_REVOKED",
    "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE",
    "TLSV1_ALERT_UNKNOWN_CA",
    "TLSV1_ALERT_ACCESS_DENIED",
}
_HANDSHAKE_FAILURE = "SSLV3_ALERT_HANDSHAKE_FAILURE"


def _describe_verification(
    cause: ssl.SSLCertVerificationError, ca_setting: str | None
) -> tuple[str, str]:
    message = cause.verify_message or str(cause)
    if cause.verify_code in (_HOSTNAME_MISMATCH, _IP_ADDRESS_MISMATCH):
        return (
            f"TLS certificate is for another name ({message})",
            "connect by a name the server's certificate holds",
        )
    if cause.verify_code in (_CERT_HAS_EXPIRED, _CERT_NOT_YET_VALID):
        return (
            f"TLS certificate not valid now ({message})",
            "renew the server's certificate (or correct this machine's clock)",
        )
    trust = (
        f"set {ca_setting} to the CA bundle (PEM) that signed the server's certificate"
        if ca_setting
        else "trust the CA that signed the server's certificate"
    )
    return f"TLS certificate not trusted ({message})", trust


def _describe_tls_alert(
    cause: ssl.SSLError, service: str, client_cert_setting: str | None
) -> tuple[str, str]:
    reason = cause.reason or ""
    alert = reason.split("ALERT_", 1)[-1].replace("_", " ").lower()
    if reason == _CERTIFICATE_REQUIRED:
        fix = (
            f"set {client_cert_setting} to a client certificate and key the server accepts"
            if client_cert_setting
            else "give a client certificate the server accepts"
        )
        return "the server requires a client certificate (TLS alert: certificate required)", fix
    if reason in _CERTIFICATE_REFUSED:
        where = f" ({client_cert_setting})" if client_cert_setting else ""
        return (
            f"the server refused the client certificate (TLS alert: {alert})",
            f"use a client certificate{where} issued by a CA the server trusts, valid now",
        )
    fix = f"check that {service} speaks TLS on that port"
    if reason == _HANDSHAKE_FAILURE and client_cert_setting:
        fix += f"; if it requires a client certificate, set {client_cert_setting}"
    return f"TLS handshake failed ({cause})", fix


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
