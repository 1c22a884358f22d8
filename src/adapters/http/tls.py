"""TLS towards the status API and the orchestrator: which CA to trust, which certificate to show."""

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from requests.adapters import HTTPAdapter


@dataclass(frozen=True, slots=True)
class ClientTls:
    """How the worker verifies an API's certificate and, for mutual TLS, proves who it is.

    `ca_file` is a PEM bundle of the CAs to trust instead of the system's trust store;
    `client_cert` a (certificate, private key) pair of PEM files shown to a server that asks.
    Every context made from it verifies the server's certificate and host name: there is no
    way to turn verification off.
    """

    ca_file: Path | None = None
    client_cert: tuple[Path, Path] | None = None

    def ssl_context(self) -> ssl.SSLContext:
        """A new client context: the CA bundle (or the system's store) and the client cert."""
        context = ssl.create_default_context(
            cafile=str(self.ca_file) if self.ca_file is not None else None
        )
        if self.client_cert is not None:
            certificate, key = self.client_cert
            context.load_cert_chain(certificate, key, password=_no_passphrase)
        return context

    def context_for(self, url: str) -> ssl.SSLContext | None:
        """The context to reach `url` with; None for plain http, which needs none.

        The system's trust store costs 2.5 MiB of resident memory: a worker posting over
        plain http does not load it.
        """
        if urlsplit(url).scheme != "https":
            return None
        return self.ssl_context()


class ContextAdapter(HTTPAdapter):
    """A requests adapter whose every connection uses one `ssl.SSLContext`.

    So the heartbeat sink and the preflight trust exactly what the status transport trusts
    (`ClientTls.ssl_context`): with `verify=True` requests would load certifi's bundle instead
    of the system's store, and it re-reads `verify`/`cert` files at each new connection.
    """

    def __init__(self, context: ssl.SSLContext, **kwargs: Any) -> None:
        self._context = context
        super().__init__(**kwargs)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["ssl_context"] = self._context
        super().init_poolmanager(*args, **kwargs)

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        # requests would add certifi's bundle (or the session's `verify` file) to our context
        # here; the context already holds what to trust and what to show.
        conn.cert_reqs = "CERT_REQUIRED"


def check_ca_file(path: Path) -> None:
    """Raise ValueError, in words an operator can act on, unless `path` is a CA bundle."""
    _readable(path)
    try:
        ssl.create_default_context().load_verify_locations(cafile=str(path))
    except ssl.SSLError as exc:
        if exc.reason == "NO_CERTIFICATE_OR_CRL_FOUND":
            raise ValueError(
                "holds no PEM certificate (a CA bundle is one or more "
                "'-----BEGIN CERTIFICATE-----' blocks)"
            ) from None
        raise ValueError(f"cannot be loaded as a CA bundle ({_reason(exc)})") from None
    except OSError as exc:
        raise ValueError(f"cannot be read ({exc.strerror or exc})") from None


def check_client_certificate(certificate: Path, key: Path, certificate_setting: str) -> None:
    """Raise ValueError about `key` unless it and `certificate` load as one client identity.

    The certificate file itself is checked by `check_certificate_file`.
    """
    text = _readable(key)
    if "PRIVATE KEY-----" not in text:
        raise ValueError("holds no PEM private key ('-----BEGIN ... PRIVATE KEY-----')")
    if "ENCRYPTED" in text:
        # The worker has no passphrase setting: an encrypted key would make OpenSSL prompt on
        # a terminal a service does not have.
        raise ValueError(
            "the private key is encrypted; give it unencrypted, readable only by the "
            "worker's user (e.g. openssl pkey -in encrypted.key -out client.key)"
        )
    try:
        ssl.create_default_context().load_cert_chain(
            str(certificate), str(key), password=_no_passphrase
        )
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise ValueError(
                f"is not the private key of {certificate_setting}'s certificate"
            ) from None
        raise ValueError(f"cannot be loaded with {certificate_setting} ({_reason(exc)})") from None
    except _EncryptedKey:
        raise ValueError("the private key is encrypted; give it unencrypted") from None
    except OSError as exc:
        raise ValueError(f"cannot be read ({exc.strerror or exc})") from None


def check_certificate_file(path: Path) -> None:
    """Raise ValueError unless `path` holds a PEM certificate (the client's own)."""
    if "-----BEGIN CERTIFICATE-----" not in _readable(path):
        raise ValueError("holds no PEM certificate ('-----BEGIN CERTIFICATE-----')")


class _EncryptedKey(Exception):
    """Raised when OpenSSL asks for the passphrase of a private key."""


def _no_passphrase() -> str:
    raise _EncryptedKey()


def _readable(path: Path) -> str:
    try:
        return path.read_text(encoding="ascii", errors="replace")
    except FileNotFoundError:
        raise ValueError("no such file") from None
    except IsADirectoryError:
        raise ValueError("is a directory, not a PEM file") from None
    except OSError as exc:
        raise ValueError(f"cannot be read ({exc.strerror or exc})") from None


def _reason(exc: ssl.SSLError) -> str:
    return exc.reason or str(exc)
