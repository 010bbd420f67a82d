"""Settings parsed once from the environment.

Secrets have no defaults anywhere: a process that starts without them stops at once and names the
missing variable. Addresses of local services default to localhost so development needs no setup
beyond the secrets (`make run` writes a `.env` with freshly generated ones).
"""
from __future__ import annotations

import base64
import binascii
import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.headerregistry import Address
from typing import Any
from urllib.parse import urlsplit

import limits

from app.channels.catalogue import CHANNELS
from app.channels.sendgrid import load_public_key

AUTOCOMMIT_BIND = "autocommit"
ENGINE_OPTIONS: dict[str, Any] = {
    # No pre-ping: it would add a round trip to every request. A connection found dead
    # fails that one statement and SQLAlchemy then discards the whole stale pool.
    "pool_recycle": 1800,
    # Seed timestamps are `timestamp without time zone` holding UTC: make now() agree.
    "connect_args": {"options": "-c timezone=UTC", "connect_timeout": 5},
}
MIB = 1024 * 1024


class ConfigError(RuntimeError):
    """Raised at start-up when the environment cannot configure the app."""


def normalize_database_url(url: str) -> str:
    """Pin the customer's psycopg2 driver whatever form of PostgreSQL URL the user set.

    Heroku-style `postgres://` is not understood by SQLAlchemy at all, and SQLAlchemy 2.1 maps a bare
    `postgresql://` to psycopg 3, which is not installed.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ConfigError(f"DATABASE_URL is not a URL: {scheme[:20]!r}...")
    if scheme in ("postgres", "postgresql", "postgresql+psycopg2"):
        return f"postgresql+psycopg2://{rest}"
    raise ConfigError(f"DATABASE_URL must be a PostgreSQL URL, got scheme {scheme!r}")


def _fernet_keys(value: str) -> list[str]:
    """DATA_ENCRYPTION_KEY: one or more comma-separated Fernet keys, newest first (rotation)."""
    keys = [k.strip() for k in value.split(",") if k.strip()]
    for key in keys:
        try:
            raw = base64.urlsafe_b64decode(key.encode())
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) != 32:
            raise ConfigError(
                "DATA_ENCRYPTION_KEY must be url-safe base64 of 32 bytes "
                "(python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())')"
            )
    return keys


def _positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    try:
        value = int(env.get(name, str(default)))
    except ValueError as exc:
        raise ConfigError(f"{name} must be an integer") from exc
    if value < 0:
        raise ConfigError(f"{name} must not be negative")
    return value


def _bounded_int(env: Mapping[str, str], name: str, default: int, maximum: int) -> int:
    value = _positive_int(env, name, default)
    if not 1 <= value <= maximum:
        raise ConfigError(f"{name} must be between 1 and {maximum}")
    return value


def _positive_float(env: Mapping[str, str], name: str) -> float | None:
    if not env.get(name):
        return None
    try:
        value = float(env[name])
    except ValueError as exc:
        raise ConfigError(f"{name} must be a number") from exc
    if not value > 0:
        raise ConfigError(f"{name} must be positive")
    return value


def _optional_count(env: Mapping[str, str], name: str) -> int | None:
    if not env.get(name):
        return None
    value = _positive_int(env, name, 0)
    if value < 1:
        raise ConfigError(f"{name} must be at least 1")
    return value


# One address: a local part and a domain, neither with spaces, angle brackets, commas or a second @.
_ADDR_SPEC = re.compile(r"[^\s<>@,;\"]+@[^\s<>@,;\"]+")


def _mail_from(value: str) -> str:
    """MAIL_FROM as one well-formed header value: `Name <address>` or a bare address.

    Everything before the angle address is the display name, commas included; the header written
    back quotes it where it must, so "Herald, Inc. <no-reply@x>" stays one sender.
    """
    text = value.strip()
    if text.endswith(">") and "<" in text:
        name, _, address = text[:-1].rpartition("<")
    else:
        name, address = "", text
    if not _ADDR_SPEC.fullmatch(address.strip()):
        raise ConfigError("MAIL_FROM must be one email address, optionally with a name: Name <user@example.com>")
    return str(Address(display_name=name.strip().strip('"'), addr_spec=address.strip()))


def _networks(env: Mapping[str, str], name: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """Comma-separated networks or single addresses: "127.0.0.1, 10.0.0.0/8"."""
    try:
        return tuple(ipaddress.ip_network(item.strip(), strict=False)
                     for item in env.get(name, "").split(",") if item.strip())
    except ValueError as exc:
        raise ConfigError(f"{name} must be comma-separated IP addresses or networks (10.0.0.0/8)") from exc


def _bounce_domain(env: Mapping[str, str]) -> str:
    domain = env.get("BOUNCE_DOMAIN", "").strip().lower().rstrip(".")
    if domain and not _DOMAIN.fullmatch(domain):
        raise ConfigError("BOUNCE_DOMAIN must be a domain name, e.g. bounces.example.com")
    return domain


def _dns_resolver(env: Mapping[str, str]) -> tuple[str, int] | None:
    """DNS_RESOLVER: `host:port`, `host` (port 53) or `[v6 address]:port`; empty: the system's resolvers."""
    value = env.get("DNS_RESOLVER", "").strip()
    if not value:
        return None
    host, port = value, "53"
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else "53" if not rest else ""
    elif value.count(":") == 1:
        host, port = value.split(":")
    try:
        address = str(ipaddress.ip_address(host))
        number = int(port)
    except ValueError:
        address, number = "", 0
    if not address or not 1 <= number <= 65535:
        raise ConfigError("DNS_RESOLVER must be a resolver's IP address and port, e.g. 127.0.0.1:53 or [::1]:53")
    return address, number


def _spf_include(env: Mapping[str, str]) -> str:
    value = env.get("SENDER_SPF_INCLUDE", "").strip().lower().rstrip(".")
    if value.startswith("include:"):
        value = value[len("include:"):]
    if value and not _DOMAIN.fullmatch(value):
        raise ConfigError("SENDER_SPF_INCLUDE must be the domain your relay's SPF record is at, e.g. amazonses.com")
    return value


def _dkim_selector_prefix(env: Mapping[str, str]) -> str:
    value = env.get("DKIM_SELECTOR_PREFIX", "").strip().lower() or "herald"
    if not re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?", value):
        raise ConfigError("DKIM_SELECTOR_PREFIX must be letters, digits and hyphens (at most 40), e.g. herald")
    return value


def _url_pattern(env: Mapping[str, str], name: str, default: str) -> str:
    pattern = env.get(name) or default
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ConfigError(f"{name} must be a regular expression: {exc}") from exc
    if env.get("HERALD_ENV") == "production" and not pattern.startswith("https://"):
        raise ConfigError(f"{name} must only allow https URLs in production")
    return pattern


def _sendgrid_key(env: Mapping[str, str]) -> str:
    """SENDGRID_WEBHOOK_PUBLIC_KEY: an ECDSA P-256 public key, base64 DER or PEM."""
    value = env.get("SENDGRID_WEBHOOK_PUBLIC_KEY", "").strip()
    if value and load_public_key(value) is None:
        raise ConfigError("SENDGRID_WEBHOOK_PUBLIC_KEY must be the Event Webhook's verification key "
                          "(an ECDSA P-256 public key, base64 as SendGrid shows it)")
    return value


def _metrics_token(env: Mapping[str, str]) -> str:
    token = env.get("METRICS_TOKEN", "").strip()
    if token and len(token) < 16:
        raise ConfigError("METRICS_TOKEN must be at least 16 characters (or unset: /metrics for this machine only)")
    return token


def _rate_limits(env: Mapping[str, str]) -> dict[str, str]:
    found = {name: env.get(name) or default for name, default in RATE_LIMIT_DEFAULTS.items()}
    for name, value in found.items():
        try:
            limits.parse_many(value)
        except ValueError as exc:
            raise ConfigError(f"{name} must read like \"5 per minute; 20 per hour\", got {value!r}") from exc
    return found


# Upper bounds: messages one sender keeps in flight, and senders working one channel at once.
MAX_IN_FLIGHT = 64
MAX_SENDERS = 64
# How long a claimed send stays `sending` without word from its sender. A live sender renews it
# (app.services.sending), so it only runs out for a sender that died: its rows are reported
# `unknown` this long after, plus the reaper's interval (celeryconfig).
SEND_LEASE_SECONDS = 30
# Contacts per chunk when a launch writes its ledger: about a second of writing per transaction.
LAUNCH_CHUNK_CONTACTS = 100_000
# How often beat sweeps for due launches (A/B winners and flow steps with them), and for lapsed send
# leases and stalled channels (celeryconfig). Each is also the most it may be set to: a scheduled
# launch starts within the first, a dead sender's rows settle within a lease plus the second.
LAUNCH_DUE_SWEEP_SECONDS = 15
REAP_STALLED_SWEEP_SECONDS = 10
# Where Amazon SNS keeps its signing certificates and confirms subscriptions: https, on sns.<region>.
SNS_URL_PATTERN = r"https://sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?/.*"
_DOMAIN = re.compile(r"(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*")


@dataclass(frozen=True)
class Settings:
    env: str
    database_url: str
    redis_url: str
    secret_key: str
    jwt_secret_key: str
    data_encryption_keys: list[str]
    public_base_url: str
    smtp_url: str
    mail_from: str
    proxy_count: int
    send_lease_seconds: int = SEND_LEASE_SECONDS
    launch_chunk_contacts: int = LAUNCH_CHUNK_CONTACTS
    # The platform's SMTP relay, as one provider account: connections each sender keeps open (its
    # messages in flight), and the relay's own rate limit shared by every sender (None: none).
    smtp_max_connections: int = 4
    smtp_messages_per_second: float | None = None
    smtp_messages_per_hour: int | None = None  # the relay's sending quotas (None: none)
    smtp_messages_per_day: int | None = None
    # How many sender tasks may work one campaign channel at once (they share its rate limits).
    send_max_senders: int = 8
    # First wait before a recipient the provider deferred is tried again (then doubled each time).
    send_retry_seconds: int = 60
    # The longest a channel whose rows all wait (quiet hours, local times, retries) goes unlooked at.
    send_wake_seconds: int = 60
    # Retention: processed raw events and finished sync runs are deleted after this many days.
    event_retention_days: int = 90
    sync_run_retention_days: int = 30
    # Tests only: every process's policy clock reads an offset from Redis (app.clock).
    adjustable_clock: bool = False
    # The platform's Meta app: it signs WhatsApp webhooks (X-Hub-Signature-256) and is asked to echo
    # the verify token when the webhook is registered. Unset: /hooks/whatsapp refuses everything.
    # Networks push endpoints may resolve to although not public (local push emulators); empty:
    # only public addresses, over https.
    push_allowed_private_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    # Outgoing webhooks (app.services.webhook_delivery): networks endpoints may be at although not
    # public (never in production), each request's time limit, the first retry's wait (doubled each
    # time), how long a delivery is retried (and an endpoint may fail throughout before it is
    # disabled), and the longest a due retry waits for a look.
    webhook_allowed_private_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    webhook_timeout_seconds: int = 10
    webhook_retry_seconds: int = 30
    webhook_retry_hours: int = 72
    webhook_wake_seconds: int = 60
    whatsapp_app_secret: str = ""
    whatsapp_verify_token: str = ""
    # Bounces (app.services.bounces): the domain of each email's signed envelope sender (empty: the
    # From address, and nothing can name its delivery), where the `bounces` process listens, and
    # soft bounces in a row that count as a hard one.
    bounce_domain: str = ""
    bounce_smtp_address: str = "0.0.0.0"
    bounce_smtp_port: int = 2525
    bounce_soft_limit: int = 3
    # Amazon SES through SNS: the topics whose notifications are applied (empty: all refused), and
    # what a signing certificate's and a subscription's URL must match.
    ses_sns_topic_arns: tuple[str, ...] = ()
    sns_url_pattern: str = SNS_URL_PATTERN
    # SendGrid's Event Webhook verification key (base64 DER, as its settings page shows it; empty:
    # every event refused).
    sendgrid_webhook_public_key: str = field(default="", repr=False)
    # Unparsed mail to the bounce domain is kept this many days for an operator to read.
    bounce_mail_retention_days: int = 30
    # Verified senders (app.services.senders): where domains' DNS records are looked up (None: the
    # system's resolvers), the SPF include asked of them (empty: none), and DKIM selectors' prefix.
    dns_resolver: tuple[str, int] | None = None
    sender_spf_include: str = ""
    dkim_selector_prefix: str = "herald"
    rate_limits: dict[str, str] = field(default_factory=dict)
    # Bearer token a Prometheus scrape of /metrics must send; empty: only this machine may scrape.
    metrics_token: str = field(default="", repr=False)
    api_base_urls: dict[str, str] = field(default_factory=dict)
    # The assistant's model (app.assistant). The endpoint itself is LLM_BASE_URL in api_base_urls.
    llm_api_key: str = field(default="", repr=False)
    llm_model: str = "gpt-4o-mini"
    llm_timeout_seconds: int = 30

    @property
    def llm_base_url(self) -> str:
        """The OpenAI-compatible endpoint; empty means the built-in deterministic assistant."""
        return self.api_base_urls.get("LLM_BASE_URL", "")

    def flask_config(self) -> dict[str, Any]:
        """The Flask/extension configuration keys derived from these settings."""
        return {
            "HERALD_SETTINGS": self,
            "SECRET_KEY": self.secret_key,
            "SQLALCHEMY_DATABASE_URI": self.database_url,
            "SQLALCHEMY_ENGINE_OPTIONS": ENGINE_OPTIONS,
            # The same database without transactions, for the single-statement read every
            # authenticated request makes: no BEGIN and ROLLBACK round trips around it.
            "SQLALCHEMY_BINDS": {
                AUTOCOMMIT_BIND: {**ENGINE_OPTIONS, "url": self.database_url, "isolation_level": "AUTOCOMMIT"},
            },
            "JWT_SECRET_KEY": self.jwt_secret_key,
            "JWT_ALGORITHM": "HS256",
            "JWT_DECODE_ALGORITHMS": ["HS256"],
            # Bearer headers only. Without cookies a CSRF claim protects nothing, and `nbf` would
            # only repeat `iat`: both left out, every request decodes a shorter token.
            "JWT_TOKEN_LOCATION": ["headers"],
            "JWT_COOKIE_CSRF_PROTECT": False,
            "JWT_ENCODE_NBF": False,
            "MAX_CONTENT_LENGTH": MIB,
            "API_TITLE": "Herald",
            "API_VERSION": "v1",
            "OPENAPI_VERSION": "3.1.0",
            "OPENAPI_URL_PREFIX": "/",
            "OPENAPI_JSON_PATH": "openapi.json",
            "OPENAPI_SWAGGER_UI_PATH": "docs",
            "OPENAPI_SWAGGER_UI_URL": "/docs/assets/",  # served from the swagger-ui-bundle package (app.api.openapi)
            "RATELIMIT_STORAGE_URI": self.redis_url,
            "RATELIMIT_HEADERS_ENABLED": True,
            # No reset at a clock boundary: "10 per hour" means any 60 minutes, never 20 across two.
            "RATELIMIT_STRATEGY": "moving-window",
            "RATELIMIT_KEY_PREFIX": "herald",
            # Redis down: degrade to per-process limits instead of failing every request.
            "RATELIMIT_IN_MEMORY_FALLBACK_ENABLED": True,
            **self.rate_limits,
            "PROPAGATE_EXCEPTIONS": False,
        }


# Throttles, in flask-limiter's notation ("5 per minute; 20 per hour"). Failed logins count against
# the account and client together, the client IP, and the account as a whole (a ceiling past which
# every client is slowed to LOGIN_RATE_LIMIT_ACCOUNT_SLOWED on it): see app.services.throttles.
RATE_LIMIT_DEFAULTS = {
    "LOGIN_RATE_LIMIT_ACCOUNT_CLIENT": "5 per minute; 20 per hour",
    "LOGIN_RATE_LIMIT_IP": "20 per minute; 200 per hour",
    "LOGIN_RATE_LIMIT_ACCOUNT": "50 per hour",
    "LOGIN_RATE_LIMIT_ACCOUNT_SLOWED": "1 per minute; 5 per hour",
    "REGISTER_RATE_LIMIT_IP": "10 per hour",
    "INGEST_RATE_LIMIT_IP": "30 per minute; 300 per hour",
    "SENDER_RATE_LIMIT_ACCOUNT": "10 per hour",
}
REQUIRED_SECRETS = ("SECRET_KEY", "JWT_SECRET_KEY", "DATA_ENCRYPTION_KEY")
# Outside APIs, each reachable through a configurable base URL so tests can use local emulators.
API_BASE_URL_DEFAULTS = {
    "SHOPIFY_API_BASE_URL": "",  # empty: https://{shopDomain}
    "META_GRAPH_API_BASE_URL": "https://graph.facebook.com",
    "GTM_API_BASE_URL": "https://tagmanager.googleapis.com",
    "TWILIO_API_BASE_URL": "https://api.twilio.com",
    "WHATSAPP_API_BASE_URL": "https://graph.facebook.com",
    "LLM_BASE_URL": "",  # empty: the built-in assistant
}


def beat_sweep_seconds(environ: Mapping[str, str] | None = None) -> tuple[int, int]:
    """Beat's launch and reaper intervals: BEAT_LAUNCH_DUE_SECONDS, BEAT_REAP_STALLED_SECONDS. Only
    beat reads them (through celeryconfig), so they are not part of the app's Settings."""
    env = os.environ if environ is None else environ
    return (_bounded_int(env, "BEAT_LAUNCH_DUE_SECONDS", LAUNCH_DUE_SWEEP_SECONDS, LAUNCH_DUE_SWEEP_SECONDS),
            _bounded_int(env, "BEAT_REAP_STALLED_SECONDS", REAP_STALLED_SWEEP_SECONDS, REAP_STALLED_SWEEP_SECONDS))


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if environ is None else environ
    missing = [name for name in REQUIRED_SECRETS if not env.get(name)]
    if missing:
        raise ConfigError(f"missing required environment variable(s): {', '.join(missing)}")
    if len(env["JWT_SECRET_KEY"]) < 32:
        raise ConfigError("JWT_SECRET_KEY must be at least 32 characters")

    herald_env = env.get("HERALD_ENV", "development")
    if herald_env == "production":
        unset = [n for n in ("DATABASE_URL", "REDIS_URL", "PUBLIC_BASE_URL", "SMTP_URL") if not env.get(n)]
        if unset:
            raise ConfigError(f"missing required environment variable(s) in production: {', '.join(unset)}")

    public_base_url = env.get("PUBLIC_BASE_URL", "http://localhost:5000").rstrip("/")
    if urlsplit(public_base_url).scheme not in ("http", "https"):
        raise ConfigError("PUBLIC_BASE_URL must be an http(s) URL")
    proxy_count = _positive_int(env, "PROXY_COUNT", 0)
    adjustable_clock = env.get("ADJUSTABLE_CLOCK", "") == "1"
    if adjustable_clock and herald_env == "production":
        raise ConfigError("ADJUSTABLE_CLOCK is for tests; it cannot be set in production")

    webhook_networks = _networks(env, "WEBHOOK_ALLOWED_PRIVATE_NETWORKS")
    if webhook_networks and herald_env == "production":
        raise ConfigError("WEBHOOK_ALLOWED_PRIVATE_NETWORKS is for tests; webhooks go to public https URLs in production")

    return Settings(
        env=herald_env,
        database_url=normalize_database_url(env.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/herald")),
        redis_url=env.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
        secret_key=env["SECRET_KEY"],
        jwt_secret_key=env["JWT_SECRET_KEY"],
        data_encryption_keys=_fernet_keys(env["DATA_ENCRYPTION_KEY"]),
        public_base_url=public_base_url,
        smtp_url=env.get("SMTP_URL", "smtp://127.0.0.1:1025"),
        mail_from=_mail_from(env.get("MAIL_FROM", "Herald <no-reply@localhost>")),
        proxy_count=proxy_count,
        send_lease_seconds=_bounded_int(env, "SEND_LEASE_SECONDS", SEND_LEASE_SECONDS, 3600),
        launch_chunk_contacts=_bounded_int(env, "LAUNCH_CHUNK_CONTACTS", LAUNCH_CHUNK_CONTACTS, 1_000_000),
        smtp_max_connections=_bounded_int(env, "SMTP_MAX_CONNECTIONS", CHANNELS["email"].in_flight, MAX_IN_FLIGHT),
        smtp_messages_per_second=_positive_float(env, "SMTP_MESSAGES_PER_SECOND"),
        smtp_messages_per_hour=_optional_count(env, "SMTP_MESSAGES_PER_HOUR"),
        smtp_messages_per_day=_optional_count(env, "SMTP_MESSAGES_PER_DAY"),
        send_max_senders=_bounded_int(env, "SEND_MAX_SENDERS_PER_CHANNEL", 8, MAX_SENDERS),
        send_retry_seconds=_bounded_int(env, "SEND_RETRY_SECONDS", 60, 3600),
        send_wake_seconds=_bounded_int(env, "SEND_WAKE_SECONDS", 60, 3600),
        event_retention_days=_bounded_int(env, "EVENT_RETENTION_DAYS", 90, 3650),
        sync_run_retention_days=_bounded_int(env, "SYNC_RUN_RETENTION_DAYS", 30, 3650),
        adjustable_clock=adjustable_clock,
        push_allowed_private_networks=_networks(env, "PUSH_ALLOWED_PRIVATE_NETWORKS"),
        webhook_allowed_private_networks=webhook_networks,
        webhook_timeout_seconds=_bounded_int(env, "WEBHOOK_TIMEOUT_SECONDS", 10, 60),
        webhook_retry_seconds=_bounded_int(env, "WEBHOOK_RETRY_SECONDS", 30, 3600),
        webhook_retry_hours=_bounded_int(env, "WEBHOOK_RETRY_HOURS", 72, 720),
        webhook_wake_seconds=_bounded_int(env, "WEBHOOK_WAKE_SECONDS", 60, 300),
        whatsapp_app_secret=env.get("WHATSAPP_APP_SECRET", ""),
        whatsapp_verify_token=env.get("WHATSAPP_VERIFY_TOKEN", ""),
        bounce_domain=_bounce_domain(env),
        bounce_smtp_address=env.get("BOUNCE_SMTP_ADDRESS", "") or "0.0.0.0",
        bounce_smtp_port=_bounded_int(env, "BOUNCE_SMTP_PORT", 2525, 65535),
        bounce_soft_limit=_bounded_int(env, "BOUNCE_SOFT_LIMIT", 3, 100),
        ses_sns_topic_arns=tuple(arn.strip() for arn in env.get("SES_SNS_TOPIC_ARNS", "").split(",") if arn.strip()),
        sns_url_pattern=_url_pattern(env, "SNS_URL_PATTERN", SNS_URL_PATTERN),
        sendgrid_webhook_public_key=_sendgrid_key(env),
        bounce_mail_retention_days=_bounded_int(env, "BOUNCE_MAIL_RETENTION_DAYS", 30, 3650),
        dns_resolver=_dns_resolver(env),
        sender_spf_include=_spf_include(env),
        dkim_selector_prefix=_dkim_selector_prefix(env),
        rate_limits=_rate_limits(env),
        metrics_token=_metrics_token(env),
        api_base_urls={name: env.get(name, default).rstrip("/") for name, default in API_BASE_URL_DEFAULTS.items()},
        llm_api_key=env.get("LLM_API_KEY", ""),
        llm_model=env.get("LLM_MODEL", "") or "gpt-4o-mini",
        llm_timeout_seconds=_positive_int(env, "LLM_TIMEOUT_SECONDS", 30) or 30,
    )
