"""The DNS records a merchant publishes for a sending domain, and how each is checked.

- SPF (only when SENDER_SPF_INCLUDE names the relay's SPF domain): the domain's one `v=spf1` TXT
  record must hold `include:<that domain>` itself (includes are not followed).
- DKIM: a TXT record at `<selector>._domainkey.<domain>` whose `p=` is Herald's public key for it.
- DMARC: exactly one TXT record at `_dmarc.<domain>` starting `v=DMARC1` (any policy).

Lookups go to DNS_RESOLVER (host:port) or the system's resolvers, through dnspython; no transaction
is open while they run. A resolver that fails to answer is `ResolverUnavailable`, never "missing".
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import asdict, dataclass

import dns.exception
import dns.resolver

from app.security import dkim_keys

TIMEOUT = 5.0  # seconds for one lookup, retries included
OK, MISSING, WRONG = "ok", "missing", "wrong"
_DMARC = re.compile(r"\s*v\s*=\s*DMARC1\s*(;|$)")
_SPF = re.compile(r"\s*v=spf1(\s|$)", re.IGNORECASE)

TxtLookup = Callable[[str], list[str]]


class ResolverUnavailable(Exception):
    """The resolver did not answer (timeout, SERVFAIL, unreachable): nothing is known."""


@dataclass(frozen=True)
class Record:
    purpose: str  # spf | dkim | dmarc
    name: str
    value: str  # what to publish (for SPF, a whole record for a domain that has none yet)
    type: str = "TXT"


@dataclass(frozen=True)
class Finding:
    purpose: str
    status: str  # ok | missing | wrong
    found: list[str]  # the TXT values at the name that matter to this record
    problem: str | None = None
    suggested: str | None = None  # a corrected record, where one can be made from what is there

    def as_json(self) -> dict[str, object]:
        return asdict(self)


def expected_records(domain: str, selector: str, public_key: str, spf_include: str) -> list[Record]:
    records = [Record("spf", domain, f"v=spf1 include:{spf_include} ~all")] if spf_include else []
    return [*records,
            Record("dkim", f"{selector}._domainkey.{domain}", dkim_keys.record_value(public_key)),
            Record("dmarc", f"_dmarc.{domain}", "v=DMARC1; p=none")]


def check(records: list[Record], lookup: TxtLookup, public_key: str, spf_include: str) -> list[Finding]:
    """What is published for each record (ResolverUnavailable propagates)."""
    checks = {"spf": lambda r: _spf(r, lookup(r.name), spf_include),
              "dkim": lambda r: _dkim(r, lookup(r.name), public_key),
              "dmarc": lambda r: _dmarc(r, lookup(r.name))}
    return [checks[record.purpose](record) for record in records]


def _spf(record: Record, txts: list[str], include: str) -> Finding:
    spf = [t for t in txts if _SPF.match(t)]
    if not spf:
        return Finding("spf", MISSING, [], f"No SPF record (a TXT record starting v=spf1) at {record.name}.")
    if len(spf) > 1:
        return Finding("spf", WRONG, spf, f"{len(spf)} SPF records at {record.name}: receivers treat that as an "
                                          "error (RFC 7208); merge them into one.")
    terms = spf[0].split()
    wanted = f"include:{include}"
    if any(term.lower().lstrip("+") == wanted for term in terms):
        return Finding("spf", OK, spf)
    # The include goes before the closing `all` (or `redirect=`), which would end the evaluation.
    at = next((i for i, term in enumerate(terms) if term.lower().lstrip("+-~?") == "all"
               or term.lower().startswith("redirect=")), len(terms))
    suggested = " ".join([*terms[:at], wanted, *terms[at:]])
    return Finding("spf", WRONG, spf, f"The SPF record at {record.name} does not include {wanted}.", suggested)


def _dkim(record: Record, txts: list[str], public_key: str) -> Finding:
    if not txts:
        return Finding("dkim", MISSING, [], f"No TXT record at {record.name}.")
    for txt in txts:
        tags = _tags(txt)
        if ("".join(tags.get("p", "").split()) == public_key and tags.get("k", "rsa").lower() == "rsa"
                and tags.get("v", "DKIM1") == "DKIM1"):
            return Finding("dkim", OK, txts)
    return Finding("dkim", WRONG, txts, f"The TXT record at {record.name} does not hold Herald's DKIM key "
                                        "for this domain (its p= differs).", record.value)


def _dmarc(record: Record, txts: list[str]) -> Finding:
    dmarc = [t for t in txts if _DMARC.match(t)]
    if not dmarc:
        return Finding("dmarc", MISSING, [], f"No DMARC record (a TXT record starting v=DMARC1) at {record.name}.")
    if len(dmarc) > 1:
        return Finding("dmarc", WRONG, dmarc, f"{len(dmarc)} DMARC records at {record.name}: receivers then "
                                              "ignore them all (RFC 7489); keep one.")
    return Finding("dmarc", OK, dmarc)


def _tags(text: str) -> dict[str, str]:
    tags = {}
    for part in text.split(";"):
        name, sep, value = part.partition("=")
        if sep:
            tags[name.strip().lower()] = value.strip()
    return tags


def txt_lookup(resolver_address: tuple[str, int] | None) -> TxtLookup:
    """A lookup of a name's TXT records (each one's strings joined, as RFC 7208 and 6376 read
    them) through the given resolver, or the system's."""
    if resolver_address is None:
        resolver = dns.resolver.Resolver()
    else:
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [resolver_address[0]]
        resolver.port = resolver_address[1]
    resolver.lifetime = TIMEOUT

    def lookup(name: str) -> list[str]:
        try:
            answer = resolver.resolve(name.rstrip(".") + ".", "TXT", raise_on_no_answer=False, search=False)
        except dns.resolver.NXDOMAIN:
            return []
        except (dns.exception.DNSException, OSError) as exc:  # timeout, SERVFAIL, no resolver reachable
            raise ResolverUnavailable(f"The DNS resolver did not answer for {name}: {type(exc).__name__}.") from exc
        if answer.rrset is None:
            return []
        return [b"".join(rdata.strings).decode("utf-8", "replace") for rdata in answer.rrset]

    return lookup
