"""The webhook subscriptions Herald registers in each Shopify source's shop, and removes again.

A Shopify source has one registration row. Creating the source, or changing its shop, token or API
version, asks for registration (`generation` + 1, status `pending`) and a worker task does it: it
holds the row by a claim with a lease, lists what the shop already delivers to the source's address
and creates each missing topic, then records the result only if the generation it read is still
current; otherwise it goes round again with the new config. Subscriptions made with credentials the
source no longer has (its shop or token changed, or it was deleted) become a removal row, with the
token encrypted: the registration worker removes those of its own source before registering (so a
removal never races a registration in the same shop), a removal task those of deleted sources.

Credentials or an address that Shopify refuses fail the registration (`failed`, with the reason)
until the merchant changes the config; outages are retried by the task and then by beat.
"""
from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.dialects import postgresql as pg

from app import task_names as tasks
from app.extensions import db, rowcount
from app.jobs import enqueue_after_commit
from app.models import DataSource, ShopifyWebhookRegistration, ShopifyWebhookRemoval, utcnow
from app.security import secret_box
from app.sources import http, shopify, shopify_webhooks
from app.sources.configs import decrypt_config
from app.sources.http import CredentialsRejected, ProviderError, RetryPolicy, TransientProviderError

log = logging.getLogger(__name__)

# Longer than a task may live (celeryconfig's hard time limit): a claim is never taken from a worker
# still registering, only from one that died.
LEASE = timedelta(minutes=10)
# Beat looks again at registrations and removals left waiting this long (a lost task, an outage
# that outlasted the task's retries); after MAX_ATTEMPTS tries a registration is given up.
RESUME_AFTER = timedelta(minutes=10)
MAX_ATTEMPTS = 30
# What the subscriptions depend on: a change of any calls for registering again.
REGISTRATION_FIELDS = ("shopDomain", "accessToken", "apiVersion")
INGEST_PATH = "/ingest/shopify/{source_id}"

_REG = ShopifyWebhookRegistration.__table__


@dataclass
class _Round:
    generation: int
    source_type: str
    stored_config: dict[str, Any] = field(repr=False)
    address: str
    previous_address: str | None

    def config(self) -> dict[str, Any]:
        try:
            return decrypt_config(self.source_type, self.stored_config)
        except ValueError:
            raise CredentialsRejected("The stored credentials cannot be decrypted; enter them again.") from None


@dataclass(frozen=True)
class _Removal:
    id: uuid.UUID
    source_id: uuid.UUID
    config: dict[str, Any] = field(repr=False)  # the token still encrypted
    subscription_ids: list[str]


# -- requests, inside the data-source service's transactions (no commit) --------------------------
def request_registration(source_id: uuid.UUID) -> None:
    """(Re)register the source's subscriptions once the caller's transaction commits."""
    db.session.execute(
        pg.insert(_REG).values(dataSourceId=source_id, status="pending")
        .on_conflict_do_update(index_elements=[_REG.c.dataSourceId], set_={
            "generation": _REG.c.generation + 1, "status": "pending", "attempts": 0, "lastError": None,
            "requestedAt": sa.func.now(), "updatedAt": sa.func.now()})
    )
    enqueue_after_commit(tasks.REGISTER_SHOPIFY_WEBHOOKS, str(source_id))


def config_changed(source_id: uuid.UUID, before: dict[str, Any], after: dict[str, Any]) -> None:
    """After a config change: a new shop or token retires the subscriptions made with the old one;
    any change the subscriptions depend on registers again."""
    changed = {name for name in REGISTRATION_FIELDS if before.get(name) != after.get(name)}
    if changed & {"shopDomain", "accessToken"}:
        _retire_registered(source_id, before)
    if changed:
        request_registration(source_id)


def source_deleted(source_id: uuid.UUID, config: dict[str, Any]) -> None:
    """Before the source's row is deleted: its subscriptions are removed after the commit."""
    removal_id = _retire_registered(source_id, config)
    if removal_id is not None:
        enqueue_after_commit(tasks.REMOVE_SHOPIFY_WEBHOOKS, str(removal_id))


def callback_url(source_id: uuid.UUID) -> str:
    base = current_app.config["HERALD_SETTINGS"].public_base_url
    return base + INGEST_PATH.format(source_id=source_id)


def _retire_registered(source_id: uuid.UUID, config: dict[str, Any]) -> uuid.UUID | None:
    # Locked: a registration recorded concurrently is either retired here, or recorded after and
    # then refused (its generation is no longer current).
    subscriptions = db.session.scalar(
        sa.select(_REG.c.subscriptions).where(_REG.c.dataSourceId == source_id).with_for_update())
    if not subscriptions:
        return None
    db.session.execute(sa.update(_REG).where(_REG.c.dataSourceId == source_id).values(subscriptions={}))
    return _retire(source_id, config, list(subscriptions.values()))


def _retire(source_id: uuid.UUID, config: dict[str, Any], subscription_ids: list[str]) -> uuid.UUID | None:
    if not subscription_ids or not config.get("accessToken"):
        return None
    removal = ShopifyWebhookRemoval(
        id=uuid.uuid4(), data_source_id=source_id, shop_domain=str(config.get("shopDomain") or ""),
        api_version=str(config.get("apiVersion") or shopify.DEFAULT_API_VERSION),
        access_token=secret_box.encrypt(str(config["accessToken"])), subscription_ids=subscription_ids,
    )
    db.session.add(removal)
    db.session.flush()
    return removal.id


# -- registering (worker) ---------------------------------------------------------------------------
def register(source_id: uuid.UUID, *, policy: RetryPolicy | None = None) -> None:
    """Bring the shop's subscriptions in line with the source's config. Talks to Shopify between
    short transactions (claim → calls → guarded record), never inside one."""
    claim = _claim(source_id)
    if claim is None:
        return  # not pending, or a worker holds it and will see any newer generation itself
    policy = policy or http.DEFAULT_POLICY
    try:
        while (current := _read_round(source_id)) is not None:
            try:
                _remove_retired(source_id, policy)
                subscriptions = _reconcile(current, policy)
            except TransientProviderError as exc:
                _note_transient(source_id, claim, str(exc))
                raise
            except ProviderError as exc:  # refused credentials, shop or address: the merchant's to fix
                if _fail(source_id, claim, current.generation, str(exc)):
                    return
                continue  # a newer config arrived meanwhile: it may well work
            if _record(source_id, claim, current, subscriptions):
                return
            # The config changed (or the source went) meanwhile: what this round made belongs to
            # credentials the source no longer has.
            _retire_round(source_id, current, subscriptions)
    except Exception as exc:
        if not isinstance(exc, ProviderError):
            _fail(source_id, claim, None, f"unexpected error ({type(exc).__name__})")
        raise
    finally:
        _release(source_id, claim)


def give_up(source_id: uuid.UUID, reason: str) -> None:
    """The task's retries are spent: beat tries again later, up to MAX_ATTEMPTS in all."""
    db.session.execute(
        sa.update(_REG).where(_REG.c.dataSourceId == source_id, _REG.c.status == "pending",
                              _REG.c.attempts >= MAX_ATTEMPTS)
        .values(status="failed", lastError=f"Gave up after {MAX_ATTEMPTS} attempts: {reason}"[:http.REASON_MAX])
    )
    db.session.commit()


def _claim(source_id: uuid.UUID) -> str | None:
    token = uuid.uuid4().hex
    claimed = db.session.scalar(
        sa.update(_REG)
        .where(_REG.c.dataSourceId == source_id, _REG.c.status == "pending",
               sa.or_(_REG.c.leaseExpiresAt.is_(None), _REG.c.leaseExpiresAt < utcnow()))
        .values(claim=token, leaseExpiresAt=utcnow() + LEASE, attempts=_REG.c.attempts + 1)
        .returning(_REG.c.dataSourceId)
    )
    db.session.commit()
    return token if claimed is not None else None


def _read_round(source_id: uuid.UUID) -> _Round | None:
    row = db.session.execute(
        sa.select(_REG.c.generation, _REG.c.callbackUrl, DataSource.source_type, DataSource.config)
        .join(DataSource, DataSource.id == _REG.c.dataSourceId)
        .where(_REG.c.dataSourceId == source_id)
    ).first()
    db.session.commit()
    if row is None:
        return None
    return _Round(row.generation, row.source_type, row.config, callback_url(source_id), row.callbackUrl)


def _reconcile(current: _Round, policy: RetryPolicy) -> dict[str, str]:
    client = shopify.ShopifyClient(current.config(), base_url=_base_url(), policy=policy)
    try:
        if current.previous_address and current.previous_address != current.address:
            # Herald's public address moved: the old one must stop receiving.
            for stale in shopify_webhooks.list_subscriptions(client, current.previous_address):
                shopify_webhooks.delete_subscription(client, stale.id)
        return shopify_webhooks.reconcile(client, current.address)
    finally:
        client.close()


def _record(source_id: uuid.UUID, claim: str, current: _Round, subscriptions: dict[str, str]) -> bool:
    recorded = rowcount(db.session.execute(
        _guarded(source_id, claim).where(_REG.c.generation == current.generation)
        .values(status="registered", subscriptions=subscriptions, callbackUrl=current.address, attempts=0,
                lastError=None, registeredAt=sa.func.now(), updatedAt=sa.func.now())
    ))
    db.session.commit()
    if recorded:
        log.info("shopify webhooks of source %s registered: %d topics", source_id, len(subscriptions))
    return bool(recorded)


def _retire_round(source_id: uuid.UUID, current: _Round, subscriptions: dict[str, str]) -> None:
    removal_id = _retire(source_id, current.config(), list(subscriptions.values()))
    source_gone = db.session.get(DataSource, source_id) is None
    if removal_id is not None and source_gone:
        enqueue_after_commit(tasks.REMOVE_SHOPIFY_WEBHOOKS, str(removal_id))
    db.session.commit()


def _note_transient(source_id: uuid.UUID, claim: str, reason: str) -> None:
    db.session.rollback()
    db.session.execute(_guarded(source_id, claim).values(lastError=reason[:http.REASON_MAX], updatedAt=sa.func.now()))
    db.session.commit()


def _fail(source_id: uuid.UUID, claim: str, generation: int | None, reason: str) -> bool:
    """Record the failure, unless a newer generation awaits (False: go round again)."""
    db.session.rollback()
    statement = _guarded(source_id, claim)
    if generation is not None:
        statement = statement.where(_REG.c.generation == generation)
    failed = rowcount(db.session.execute(
        statement.values(status="failed", lastError=reason[:http.REASON_MAX], updatedAt=sa.func.now())))
    db.session.commit()
    if failed:
        log.warning("shopify webhooks of source %s not registered: %s", source_id, reason)
    return bool(failed)


def _release(source_id: uuid.UUID, claim: str) -> None:
    db.session.rollback()
    db.session.execute(_guarded(source_id, claim).values(claim=None, leaseExpiresAt=None))
    db.session.commit()


def _guarded(source_id: uuid.UUID, claim: str) -> sa.Update:
    return sa.update(_REG).where(_REG.c.dataSourceId == source_id, _REG.c.claim == claim)


# -- removing -------------------------------------------------------------------------------------
def remove(removal_id: uuid.UUID, *, policy: RetryPolicy | None = None) -> None:
    """Delete a removal's subscriptions from their shop (a deleted source's). Safe to run twice."""
    removals = _removals(ShopifyWebhookRemoval.id == removal_id)
    for removal in removals:
        _remove_one(removal, policy or http.DEFAULT_POLICY)


def _remove_retired(source_id: uuid.UUID, policy: RetryPolicy) -> None:
    for removal in _removals(ShopifyWebhookRemoval.data_source_id == source_id):
        _remove_one(removal, policy)


def _removals(condition: sa.ColumnElement[bool]) -> list[_Removal]:
    rows = db.session.execute(
        sa.select(ShopifyWebhookRemoval.id, ShopifyWebhookRemoval.data_source_id, ShopifyWebhookRemoval.shop_domain,
                  ShopifyWebhookRemoval.api_version, ShopifyWebhookRemoval.access_token,
                  ShopifyWebhookRemoval.subscription_ids)
        .where(condition).order_by(ShopifyWebhookRemoval.created_at)
    ).all()
    db.session.commit()
    return [_Removal(r.id, r.data_source_id, {"shopDomain": r.shop_domain, "apiVersion": r.api_version,
                                              "accessToken": r.access_token}, list(r.subscription_ids))
            for r in rows]


def _remove_one(removal: _Removal, policy: RetryPolicy) -> None:
    try:
        config = {**removal.config, "accessToken": secret_box.decrypt(removal.config["accessToken"])}
        client = shopify.ShopifyClient(config, base_url=_base_url(), policy=policy)
        try:
            for subscription_id in removal.subscription_ids:
                shopify_webhooks.delete_subscription(client, subscription_id)
        finally:
            client.close()
    except TransientProviderError as exc:
        db.session.rollback()
        db.session.execute(sa.update(ShopifyWebhookRemoval).where(ShopifyWebhookRemoval.id == removal.id)
                           .values(attempts=ShopifyWebhookRemoval.attempts + 1, lastError=str(exc)))
        db.session.commit()
        raise
    except (ProviderError, ValueError) as exc:
        # The old token was revoked, the shop is gone, or the key that sealed the token is: nothing
        # can remove them any more (Shopify drops an uninstalled app's subscriptions itself).
        log.warning("shopify webhook subscriptions of source %s left in place: %s", removal.source_id, exc)
    db.session.rollback()
    db.session.execute(sa.delete(ShopifyWebhookRemoval).where(ShopifyWebhookRemoval.id == removal.id))
    db.session.commit()


# -- beat -----------------------------------------------------------------------------------------
def resume_waiting() -> int:
    """Beat: re-enqueue registrations and removals left waiting (a lost task, a long outage), and
    register again where Herald's public address changed. How many tasks were queued."""
    stale = utcnow() - RESUME_AFTER
    moved = db.session.scalars(
        sa.update(_REG).where(_REG.c.status == "registered", _REG.c.callbackUrl != _address_sql())
        .values(status="pending", generation=_REG.c.generation + 1, requestedAt=sa.func.now(),
                updatedAt=sa.func.now())
        .returning(_REG.c.dataSourceId)
    ).all()
    waiting = db.session.scalars(
        sa.select(_REG.c.dataSourceId).where(
            _REG.c.status == "pending", _REG.c.updatedAt < stale,
            sa.or_(_REG.c.leaseExpiresAt.is_(None), _REG.c.leaseExpiresAt < utcnow()))
    ).all()
    source_exists = sa.select(DataSource.id).where(DataSource.id == ShopifyWebhookRemoval.data_source_id).exists()
    removals = db.session.scalars(
        sa.select(ShopifyWebhookRemoval.id).where(~source_exists, ShopifyWebhookRemoval.updated_at < stale)
    ).all()
    registrations = {*moved, *waiting}
    for source_id in registrations:
        enqueue_after_commit(tasks.REGISTER_SHOPIFY_WEBHOOKS, str(source_id))
    for removal_id in removals:
        enqueue_after_commit(tasks.REMOVE_SHOPIFY_WEBHOOKS, str(removal_id))
    db.session.commit()
    return len(registrations) + len(removals)


def _address_sql() -> sa.ColumnElement[str]:
    prefix, _, suffix = callback_url(uuid.UUID(int=0)).partition(str(uuid.UUID(int=0)))
    return sa.literal(prefix) + sa.cast(_REG.c.dataSourceId, sa.String) + sa.literal(suffix)


def _base_url() -> str:
    return current_app.config["HERALD_SETTINGS"].api_base_urls.get("SHOPIFY_API_BASE_URL", "")
