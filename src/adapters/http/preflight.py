"""The HTTP half of `python-worker check`: the status API and the orchestrator answer.

Each check POSTs `{"preflight": true}`, which is neither a valid status update nor a valid
heartbeat, so an API that authenticates and validates answers 4xx and stores nothing.
"""

import contextlib
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import requests

from python_worker.adapters.http.headers import authorization
from python_worker.adapters.network import describe_network_error
from python_worker.application.ports import CheckResult, Outcome, Preflight

PROBE_BODY = b'{"preflight": true}'
HTTP_TIMEOUT = (3.0, 5.0)  # connect, read


class HttpEndpointPreflight(Preflight):
    """One endpoint the worker POSTs to; the setting names are for the fix it suggests."""

    def __init__(
        self, name: str, url: str, token: str | None, *, url_variable: str, token_variable: str
    ) -> None:
        self._name = name
        self._url = url
        self._token = token
        self._variables = (url_variable, token_variable)

    def checks(self) -> Iterator[CheckResult]:
        url_variable, token_variable = self._variables
        yield _http_check(
            self._name,
            self._url,
            self._token,
            url_variable=url_variable,
            token_variable=token_variable,
        )


def _http_check(
    name: str, url: str, token: str | None, *, url_variable: str, token_variable: str
) -> CheckResult:
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
    try:
        with session:
            response = session.post(
                url, data=PROBE_BODY, headers=headers, timeout=HTTP_TIMEOUT, allow_redirects=False
            )
    except requests.exceptions.SSLError as exc:
        problem, fix = describe_network_error(exc, what)
        return CheckResult(Outcome.FAIL, f"{what}: {problem}", fix)
    except requests.exceptions.Timeout:
        return CheckResult(
            Outcome.FAIL,
            f"{what}: no answer within {HTTP_TIMEOUT[0]:.0f}+{HTTP_TIMEOUT[1]:.0f} s",
            f"check that {name} is up and that no firewall drops the traffic",
        )
    except requests.exceptions.RequestException as exc:
        problem, fix = describe_network_error(exc, f"the {name}")
        return CheckResult(Outcome.FAIL, f"{what}: {problem}", f"{fix} (or correct {url_variable})")
    with contextlib.closing(response):
        return _judge_answer(what, response, token, url_variable, token_variable)


def _judge_answer(
    what: str,
    response: requests.Response,
    token: str | None,
    url_variable: str,
    token_variable: str,
) -> CheckResult:
    code = response.status_code
    answered = f"{what} reachable: answered {code} to a probe POST"
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
