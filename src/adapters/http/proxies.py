"""Proxy variables that would apply to the worker's APIs: the worker refuses them at start-up."""

import os
from collections.abc import Mapping
from urllib.parse import urlsplit

from requests.utils import get_environ_proxies


def proxy_in_the_way(urls: Mapping[str, str]) -> str | None:
    """The configuration problem when a proxy variable applies to one of `urls`, else None.

    `urls` maps each setting to its URL. Whether a variable applies is decided as requests
    (and curl) decide it: `https_proxy`/`http_proxy` by the URL's scheme, then `all_proxy`,
    lower case before upper case, unless `no_proxy` covers the host (names, domain suffixes,
    host:port, IP ranges in CIDR). The worker's status transport speaks to the API directly and
    its HTTP clients are kept direct alike (requests' `trust_env=False`), so rather than ignore
    a proxy an operator set for them, start-up stops with what to change.
    """
    offending: dict[str, list[tuple[str, str]]] = {}  # variable -> [(setting, host)]
    values: dict[str, str] = {}
    for setting, url in urls.items():
        parts = urlsplit(url)
        proxies = get_environ_proxies(url)
        for key in (parts.scheme, "all"):
            value = proxies.get(key)
            if value:
                variable = _variable(key, value)
                values[variable] = value
                offending.setdefault(variable, []).append((setting, parts.hostname or ""))
                break
    if not offending:
        return None
    variable, hits = next(iter(offending.items()))
    where = " and ".join(f"{setting} (host {host})" for setting, host in hits)
    hosts = list(dict.fromkeys(host for _, host in hits))
    present = os.environ.get("no_proxy") or os.environ.get("NO_PROXY") or ""
    example = ",".join(dict.fromkeys([*filter(None, present.split(",")), *hosts]))
    noun = "host" if len(hosts) == 1 else "hosts"
    return (
        f"{variable}={_without_credentials(values[variable])!r}: applies to {where}, but the "
        f"worker connects directly, never through a proxy: add the {noun} to NO_PROXY or "
        f"unset {variable} (example: NO_PROXY={example})"
    )


def _variable(key: str, value: str) -> str:
    """Which environment variable gave `key`'s proxy (lower case wins, as in urllib)."""
    names = [name for name in os.environ if name.lower() == f"{key}_proxy"]
    names.sort(key=lambda name: name != name.lower())
    return next((name for name in names if os.environ[name] == value), f"{key}_proxy".upper())


def _without_credentials(proxy: str) -> str:
    """The proxy URL without user and password: they are secrets."""
    scheme, separator, rest = proxy.partition("://")
    if not separator:
        scheme, rest = "", proxy
    authority, slash, path = rest.partition("/")
    authority = authority.rpartition("@")[2]
    bare = authority + slash + path
    return f"{scheme}://{bare}" if separator else bare
