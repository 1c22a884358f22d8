"""Sends worker heartbeats to the orchestrator over HTTP."""

import threading

import orjson
import requests
from requests.adapters import HTTPAdapter

from python_worker.adapters.http.headers import JSON, authorization
from python_worker.adapters.http.tls import ClientTls, ContextAdapter
from python_worker.adapters.wire import heartbeat_body
from python_worker.application.ports import Heartbeat, HeartbeatFailed, HeartbeatSink

HEARTBEAT_PATH = "/api/workers/heartbeat"
_BODY_EXCERPT = 200


class HttpHeartbeatSink(HeartbeatSink):
    """POSTs each heartbeat to `<orchestrator_url>/api/workers/heartbeat`; fails fast.

    Short timeouts keep a slow orchestrator from delaying the next tick; any failure becomes a
    one-line `HeartbeatFailed` (status code and a short excerpt of the answer). The bearer token
    is sent as a header and never appears in a message or a repr.

    Over https the orchestrator's certificate is verified against `tls` (its CA file, else the
    system's trust store, as the status transport does) and `tls`'s client certificate is
    shown to a server that asks for one. No proxy: `trust_env` stays False in the worker,
    which refuses a proxy variable meant for the orchestrator at start-up instead.
    """

    def __init__(
        self,
        orchestrator_url: str,
        *,
        token: str | None = None,
        tls: ClientTls | None = None,
        connect_timeout: float = 2.0,
        read_timeout: float = 3.0,
        trust_env: bool = False,
    ) -> None:
        self._url = orchestrator_url.rstrip("/") + HEARTBEAT_PATH
        self._timeouts = (connect_timeout, read_timeout)
        # The worker's heartbeat thread is the only caller, but a lock costs nothing here and
        # keeps the (not thread-safe) session safe from a second caller.
        self._lock = threading.Lock()
        self._session = requests.Session()
        self._session.trust_env = trust_env
        # No urllib3 retries: a missed heartbeat is simply sent again at the next tick.
        context = (tls or ClientTls()).context_for(self._url)
        adapter = (
            HTTPAdapter(pool_connections=1, pool_maxsize=1, max_retries=0)
            if context is None
            else ContextAdapter(context, pool_connections=1, pool_maxsize=1, max_retries=0)
        )
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        self._session.headers.update({**JSON, **authorization(token)})

    @property
    def url(self) -> str:
        return self._url

    def send(self, heartbeat: Heartbeat) -> None:
        body = orjson.dumps(heartbeat_body(heartbeat))
        try:
            with self._lock:
                response = self._session.post(
                    self._url, data=body, timeout=self._timeouts, allow_redirects=False
                )
        except requests.RequestException as exc:
            # requests' messages name the URL and the cause, never the headers.
            raise HeartbeatFailed(
                _one_line(f"heartbeat to {self._url} failed: {type(exc).__name__}: {exc}")
            ) from None
        if not 200 <= response.status_code < 300:
            raise HeartbeatFailed(
                _one_line(
                    f"heartbeat to {self._url} answered HTTP {response.status_code}: "
                    f"{response.text[:_BODY_EXCERPT]}"
                )
            )

    def close(self) -> None:
        with self._lock:
            self._session.close()

    def __repr__(self) -> str:
        return f"HttpHeartbeatSink(url={self._url!r})"


def _one_line(text: str) -> str:
    return " ".join(text.split())
