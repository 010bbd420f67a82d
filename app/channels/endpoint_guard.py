"""Requests to URLs a merchant supplied (web push endpoints, webhook endpoints), kept off private
networks.

An endpoint's host is resolved once; every address it resolves to must be public (or inside a
network the operator allowed, `PUSH_ALLOWED_PRIVATE_NETWORKS`, `WEBHOOK_ALLOWED_PRIVATE_NETWORKS`),
and the connection then goes to that very address — a second lookup at connect time could answer
differently (DNS rebinding). The request still names the original host: Host header, TLS SNI and
certificate verification all use it. Plain http is refused unless the endpoint lies entirely in an
allowed network (a local emulator).
"""
from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence
from typing import Any, cast
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3 import HTTPConnectionPool

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class EndpointRefused(requests.exceptions.InvalidURL):
    """The endpoint must not be called; nothing was sent."""


class EndpointGuard:
    """Decides which address a URL may be reached at; remembers each host's answer for its lifetime
    (a sender's run), so every message to one push service costs one lookup."""

    def __init__(self, allowed_private: Sequence[Network] = (), what: str = "push endpoint") -> None:
        self._allowed_private = tuple(allowed_private)
        self._what = what  # how refusals name the URL
        self._answers: dict[tuple[str, str, int], str | EndpointRefused] = {}

    def address_for(self, url: str) -> str:
        """The IP address to connect to for `url`, or EndpointRefused saying why none may be."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise EndpointRefused(f"{self._what} is not an https URL")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        key = (parts.scheme, parts.hostname, port)
        if key not in self._answers:
            self._answers[key] = self._check(parts.scheme, parts.hostname, port)
        answer = self._answers[key]
        if isinstance(answer, EndpointRefused):
            raise answer
        return answer

    def _check(self, scheme: str, host: str, port: int) -> str | EndpointRefused:
        try:
            found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError:
            return EndpointRefused(f"{self._what} host {host} cannot be resolved")
        # An AF_INET or AF_INET6 socket address starts with the address as text.
        addresses = [ipaddress.ip_address(cast(str, info[4][0]).split("%")[0]) for info in found]
        allowed = [any(address in network for network in self._allowed_private) for address in addresses]
        if scheme != "https" and not all(allowed):
            return EndpointRefused(f"{self._what} is not an https URL")
        if not all(address.is_global or ok for address, ok in zip(addresses, allowed)):
            return EndpointRefused(f"{self._what} host {host} is not a public address")
        return str(addresses[0])


class PinnedAdapter(HTTPAdapter):
    """An HTTPAdapter that connects to the address its guard checked, never to a fresh lookup."""

    def __init__(self, guard: EndpointGuard, **kwargs: Any) -> None:
        self._guard = guard
        super().__init__(**kwargs)

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:
        # A prepared request always has its URL; the stub allows None for one not yet prepared.
        parts = urlsplit(cast(str, request.url))
        hostname = parts.hostname or ""  # no host: address_for refuses the URL before anything is sent
        host = f"[{hostname}]" if ":" in hostname else hostname
        request.headers["Host"] = f"{host}:{parts.port}" if parts.port else host
        return super().send(request, *args, **kwargs)

    def get_connection_with_tls_context(self, request: requests.PreparedRequest, verify: Any,
                                        proxies: Any = None, cert: Any = None) -> HTTPConnectionPool:
        address = self._guard.address_for(cast(str, request.url))
        host_params, pool_kwargs = self.build_connection_pool_key_attributes(request, verify, cert)
        if host_params["scheme"] == "https":
            # SNI and certificate verification for the name in the URL, not the address.
            # urllib3 takes server_hostname; the stub's TypedDict lists only certificate settings.
            pool_kwargs["server_hostname"] = host_params["host"]  # type: ignore[typeddict-unknown-key]
        return self.poolmanager.connection_from_host(
            host=address, port=host_params["port"], scheme=host_params["scheme"], pool_kwargs=pool_kwargs)

