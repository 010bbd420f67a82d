"""A real DNS server (dnslib) on 127.0.0.1, UDP and TCP on one random port, answering TXT queries with
what a test publishes: Herald's DNS_RESOLVER points at it, and DKIM signatures are verified against it."""
from __future__ import annotations

import socket
import threading

import dns.resolver
from dnslib import QTYPE, RCODE, RR, TXT
from dnslib.server import BaseResolver, DNSLogger, DNSServer

TXT_STRING_MAX = 255  # one character-string of a TXT record (RFC 1035); longer values span several


class LocalDns(BaseResolver):
    def __init__(self) -> None:
        self._records: dict[str, list[list[bytes]]] = {}
        self._lock = threading.Lock()
        self.failing = False  # answer SERVFAIL to everything, as a broken resolver does
        self._servers: list[DNSServer] = []
        self.port = 0

    # --- What is published --------------------------------------------------------------------

    def publish_txt(self, name: str, value: str) -> None:
        """One TXT record at `name`, split into 255-character strings as DNS hosts store long values."""
        data = value.encode()
        strings = [data[i:i + TXT_STRING_MAX] for i in range(0, len(data), TXT_STRING_MAX)] or [b""]
        with self._lock:
            self._records.setdefault(_key(name), []).append(strings)

    def remove(self, name: str) -> None:
        with self._lock:
            self._records.pop(_key(name), None)

    def clear(self) -> None:
        with self._lock:
            self._records.clear()
        self.failing = False

    # --- Answering ------------------------------------------------------------------------------

    def resolve(self, request, handler):
        reply = request.reply()
        if self.failing:
            reply.header.rcode = RCODE.SERVFAIL
            return reply
        name = _key(str(request.q.qname))
        with self._lock:
            records = [list(strings) for strings in self._records.get(name, [])]
            known = name in self._records or any(key.endswith("." + name) for key in self._records)
        if not known:
            reply.header.rcode = RCODE.NXDOMAIN
        elif request.q.qtype == QTYPE.TXT:
            for strings in records:
                reply.add_answer(RR(request.q.qname, QTYPE.TXT, rdata=TXT(strings), ttl=0))
        return reply

    # --- Serving --------------------------------------------------------------------------------

    def start(self) -> LocalDns:
        quiet = DNSLogger("-send,-recv,-request,-reply,-truncated,-error,-data", prefix=False)
        for _ in range(20):  # a port free for UDP may be taken for TCP: try another
            port = _free_udp_port()
            udp = DNSServer(self, address="127.0.0.1", port=port, tcp=False, logger=quiet)
            try:
                tcp = DNSServer(self, address="127.0.0.1", port=port, tcp=True, logger=quiet)
            except OSError:
                udp.server.server_close()
                continue
            servers = [udp, tcp]
            for server in servers:
                server.start_thread()
            self._servers, self.port = servers, port
            return self
        raise RuntimeError("no free port for the DNS server")

    def stop(self) -> None:
        for server in self._servers:
            server.stop()
            server.server.server_close()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def txt(self, name: str, timeout: float = 5) -> bytes | None:
        """dkimpy's DNS lookup (`dnsfunc`), answered by this server: a name's first TXT record."""
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers, resolver.port, resolver.lifetime = ["127.0.0.1"], self.port, timeout
        name = name.decode() if isinstance(name, bytes) else name
        try:
            answer = resolver.resolve(name.rstrip(".") + ".", "TXT", raise_on_no_answer=False, search=False)
        except dns.resolver.NXDOMAIN:
            return None
        return b"".join(next(iter(answer.rrset)).strings) if answer.rrset else None


def _key(name: str) -> str:
    return name.rstrip(".").lower()


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
