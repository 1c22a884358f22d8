"""The HTTP half of `python-worker check`: the status API and the orchestrator answer.

Each check POSTs `{"preflight": true}`, which is neither a valid status update nor a valid
heartbeat, so an API that authenticates and validates answers 4xx and stores nothing.
"""

import contextlib
import http.client
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import requests

from python_worker.adapters.http.headers import authorization
from python_worker.adapters.http.tls import ClientTls, ContextAdapter
from python_worker.adapters.network import describe_network_error, root_cause
from python_worker.application.ports import CheckResult, Outcome, Preflight

PROBE_BODY = b'{"preflight": true}'
HTTP_TIMEOUT = (3.0, 5.0)  # connect, read


@dataclass(frozen=True)
class _Endpoint:
    name: str
    url: str
    token: str | None
    tls: ClientTls
    url_variable: str
    token_variable: str
    tls_prefix: str

    @property
    def ca_setting(self) -> str:
        return f"{self.tls_prefix}_CA_FILE"

    @property
    def client_cert_settings(self) -> str:
        return f"{self.tls_prefix}_CLIENT_CERT_FILE and {self.tls_prefix}_CLIENT_KEY_FILE"


class HttpEndpointPreflight(Preflight):
    """One endpoint the worker POSTs to, reached with the worker's own TLS settings (`tls`).

    The setting names are for the fixes it suggests: `url_variable`, `token_variable`, and
    `tls_prefix` for `<prefix>_CA_FILE` and `<prefix>_CLIENT_CERT_FILE`/`_CLIENT_KEY_FILE`.
    """

    def __init__(
        self,
        name: str,
        url: str,
        token: str | None,
        *,
        url_variable: str,
        token_variable: str,
        tls: ClientTls,
        tls_prefix: str,
    ) -> None:
        self._endpoint = _Endpoint(name, url, token, tls, url_variable, token_variable, tls_prefix)

    def checks(self) -> Iterator[CheckResult]:
        yield _http_check(self._endpoint)


def _http_check(endpoint: _Endpoint) -> CheckResult:
    name, url, token = endpoint.name, endpoint.url, endpoint.token
    url_variable, token_variable = endpoint.url_variable, endpoint.token_variable
    what = f"{name} {_safe_url(url)}"
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "python-worker-preflight",
        "X-Python-Worker-Preflight": "1",
        **authorization(token),
    }
    session = requests.Session()
    # As the worker's reporter and heartbeat sink: no proxies, .netrc or REQUESTS_CA_BUNDLE
    # from the environment, so the check sees what the worker will see.
    session.trust_env = False
    context = endpoint.tls.context_for(url)
    if context is not None:
        session.mount("https://", ContextAdapter(context, max_retries=0))
    try:
        with session:
            # stream=True keeps the connection, and so its TLS session, open for `_tls_note`.
            response = session.post(
                url,
                data=PROBE_BODY,
                headers=headers,
                timeout=HTTP_TIMEOUT,
                allow_redirects=False,
                stream=True,
            )
    except requests.exceptions.SSLError as exc:
        if _closed_without_answer(exc):
            return _closed_after_handshake(what, endpoint)
        problem, fix = describe_network_error(
            exc, what, endpoint.ca_setting, endpoint.client_cert_settings
        )
        return CheckResult(Outcome.FAIL, f"{what}: {problem}", fix)
    except requests.exceptions.Timeout:
        return CheckResult(
            Outcome.FAIL,
            f"{what}: no answer within {HTTP_TIMEOUT[0]:.0f}+{HTTP_TIMEOUT[1]:.0f} s",
            f"check that {name} is up and that no firewall drops the traffic",
        )
    except requests.exceptions.RequestException as exc:
        if context is not None and _closed_without_answer(exc):
            return _closed_after_handshake(what, endpoint)
        problem, fix = describe_network_error(exc, f"the {name}")
        return CheckResult(Outcome.FAIL, f"{what}: {problem}", f"{fix} (or correct {url_variable})")
    with contextlib.closing(response):
        if _no_client_certificate_page(response):
            return CheckResult(
                Outcome.FAIL,
                f"{what}: answered {response.status_code}: it requires a client certificate",
                f"set {endpoint.client_cert_settings} to a client certificate and key it accepts",
            )
        how = _tls_note(response, endpoint, context) if context is not None else ""
        return _judge_answer(what, response, token, url_variable, token_variable, how)


def _tls_note(response: requests.Response, endpoint: _Endpoint, context: ssl.SSLContext) -> str:
    """' over TLSv1.3 (…)': the handshake's protocol, whom it trusted, what it could show."""
    sock = getattr(getattr(response.raw, "connection", None), "sock", None)
    version = sock.version() if isinstance(sock, ssl.SSLSocket) else None
    if endpoint.tls.ca_file is not None:
        # A context made with a CA file holds that file's CAs only: this counts what it loaded.
        count = len(context.get_ca_certs())
        plural = "" if count == 1 else "s"
        trust = f"{endpoint.ca_setting}, {count} CA certificate{plural}"
    else:
        trust = "the system's trust store"
    notes = [f"server certificate verified with {trust}"]
    if endpoint.tls.client_cert is not None:
        # Python cannot tell whether the server asked for it; one that requires it and answers
        # has accepted it.
        notes.append(f"client certificate of {endpoint.tls_prefix}_CLIENT_CERT_FILE sent if asked")
    return f" over {version or 'TLS'} ({'; '.join(notes)})"


def _closed_without_answer(exc: requests.RequestException) -> bool:
    cause = root_cause(exc)
    closed = http.client.RemoteDisconnected | ConnectionResetError | ssl.SSLEOFError
    return isinstance(cause, closed)


def _closed_after_handshake(what: str, endpoint: _Endpoint) -> CheckResult:
    # Under TLS 1.3 the client's side of the handshake ends before the server has checked the
    # client's certificate: a server that wants one (and gets none, or one it refuses) often
    # just closes the connection, without an alert, while the request is on its way.
    problem = f"{what}: closed the connection in or right after the TLS handshake, unanswered"
    if endpoint.tls.client_cert is None:
        fix = (
            f"if it requires a client certificate (mutual TLS), set "
            f"{endpoint.client_cert_settings}; otherwise check that the {endpoint.name} is up"
        )
    else:
        fix = (
            f"check that the {endpoint.name} accepts the client certificate of "
            f"{endpoint.tls_prefix}_CLIENT_CERT_FILE (issued by a CA it trusts, valid now)"
        )
    return CheckResult(Outcome.FAIL, problem, fix)


def _no_client_certificate_page(response: requests.Response) -> bool:
    # nginx with `ssl_verify_client on` completes the handshake without a client certificate
    # and answers 400 "No required SSL certificate was sent": a 400 the probe must not take
    # for "reachable", since every status would then be refused (a 4xx is never retried).
    return response.status_code == 400 and "ssl certificate" in response.text[:2000].lower()


def _judge_answer(
    what: str,
    response: requests.Response,
    token: str | None,
    url_variable: str,
    token_variable: str,
    how: str = "",
) -> CheckResult:
    code = response.status_code
    answered = f"{what} reachable{how}: answered {code} to a probe POST"
    if code in (401, 403):
        if token:
            return CheckResult(
                Outcome.FAIL,
                f"{what}: token refused ({code})",
                f"check {token_variable}: the API does not accept it",
            )
        return CheckResult(
            Outcome.FAIL,
            f"{what}: answered {code}: it wants a token",
            f"set {token_variable} to the bearer token the API expects",
        )
    token_note = " (token accepted)" if token else ""
    if 200 <= code < 300 or code in (400, 409, 422):
        return CheckResult(Outcome.OK, answered + token_note)
    if code in (404, 405, 410):
        return CheckResult(
            Outcome.FAIL,
            f"{what}: answered {code} to a POST: not the endpoint the worker posts to",
            f"check {url_variable} (a 4xx answer is not retried: what is sent there is lost)",
        )
    if 300 <= code < 400:
        location = _safe_url(response.headers.get("Location", "?"))
        return CheckResult(
            Outcome.FAIL,
            f"{what}: answered {code}, a redirect to {location}",
            f"point {url_variable} at the final URL (the worker does not follow redirects)",
        )
    if code >= 500 or code == 429:
        return CheckResult(
            Outcome.WARN,
            answered + f"{token_note}: it is unwell; the worker keeps status updates in the "
            "outbox until it recovers",
        )
    return CheckResult(Outcome.WARN, answered + token_note + ": an unexpected answer")


def _safe_url(url: str) -> str:
    """The URL without user info (a password may sit in it)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
