"""Idempotency keys: a POST retried with the same `Idempotency-Key` gets the first answer back.

Kept in PostgreSQL, beside the changes they guard: a record outlives a Redis restart or eviction
(losing one would let a retry launch a campaign twice), answers sit on disk rather than in the
broker's memory for 24 hours, and they go with their merchant (cascade). Each step is one statement
on the autocommit engine: the claim is committed before the request's work starts, so a second
request with the key sees it at once, whatever the first one's transactions do.

A claim is a lease: a request still running after LEASE is taken for dead (a web worker is killed
long before: gunicorn's timeout is 30 s) and a retry may run again.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from app.errors import Conflict, ValidationFailed
from app.extensions import autocommit_engine, db
from app.models import IdempotencyKey
from app.security import secret_box

RETENTION = timedelta(hours=24)
LEASE = timedelta(minutes=5)


class IdempotencyKeyInUse(Conflict):
    code = "idempotency_key_in_use"


class IdempotencyKeyReused(ValidationFailed):
    code = "idempotency_key_reused"


@dataclass(frozen=True)
class Claim:
    """This request owns the key; `locked_until` tells its claim from a later one's."""

    user_id: uuid.UUID
    key: str
    locked_until: datetime


@dataclass(frozen=True)
class StoredResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


_RECORD_COLUMNS = ('"lockedUntil"', '"requestHash"', '"responseStatus"', '"responseHeaders"', '"responseBody"')
# One round trip: take the key if it is free (new, expired, or abandoned by a request that died), else
# read the record that holds it. A record committed by a concurrent claim after this statement's
# snapshot is not read back: no row at all then means "just claimed by another request".
_CLAIM = sa.text(f"""
WITH claimed AS (
    INSERT INTO idempotency_keys ("userId", key, "requestHash", "lockedUntil", "createdAt")
    VALUES (:user_id, :key, :request_hash, now() + :lease, now())
    ON CONFLICT ("userId", key) DO UPDATE
       SET "requestHash" = excluded."requestHash", "lockedUntil" = excluded."lockedUntil",
           "createdAt" = excluded."createdAt",
           "responseStatus" = NULL, "responseHeaders" = NULL, "responseBody" = NULL
     WHERE idempotency_keys."createdAt" <= now() - :retention
        OR (idempotency_keys."responseStatus" IS NULL AND idempotency_keys."lockedUntil" <= now())
    RETURNING "lockedUntil"
)
SELECT true AS claimed, "lockedUntil", NULL::bytea AS "requestHash", NULL::smallint AS "responseStatus",
       NULL::jsonb AS "responseHeaders", NULL::bytea AS "responseBody"
  FROM claimed
UNION ALL
SELECT false, {", ".join(_RECORD_COLUMNS)}
  FROM idempotency_keys
 WHERE "userId" = :user_id AND key = :key AND NOT EXISTS (SELECT FROM claimed)
""").bindparams(
    sa.bindparam("user_id", type_=pg.UUID(as_uuid=True)),
    sa.bindparam("request_hash", type_=sa.LargeBinary()),
    sa.bindparam("lease", type_=sa.Interval()),
    sa.bindparam("retention", type_=sa.Interval()),
).columns(
    claimed=sa.Boolean(), lockedUntil=sa.DateTime(), requestHash=sa.LargeBinary(), responseStatus=sa.SmallInteger(),
    responseHeaders=pg.JSONB(), responseBody=sa.LargeBinary(),
)


def claim(user_id: uuid.UUID, key: str, request_hash: bytes) -> Claim | StoredResponse:
    """Own the key for this request, or the answer its first request gave.

    409 while the first request with the key is still running; 422 if the key came with a
    different request (method, path or body) within RETENTION."""
    row = db.session.execute(
        _CLAIM,
        {"user_id": user_id, "key": key, "request_hash": request_hash, "lease": LEASE, "retention": RETENTION},
        bind_arguments={"bind": autocommit_engine()},
    ).first()
    if row is not None and row.claimed:
        return Claim(user_id=user_id, key=key, locked_until=row.lockedUntil)
    if row is not None and bytes(row.requestHash) != request_hash:
        raise IdempotencyKeyReused(
            "This Idempotency-Key was used with a different request (method, path or body) in the last 24 hours; "
            "use a new key for a new request.")
    if row is None or row.responseStatus is None:
        raise IdempotencyKeyInUse("A request with this Idempotency-Key is still being processed; retry later.")
    body = secret_box.decrypt_bytes(bytes(row.responseBody)) if row.responseBody else b""
    return StoredResponse(status=row.responseStatus, headers=[tuple(pair) for pair in row.responseHeaders], body=body)


def record(claim: Claim, response: StoredResponse) -> None:
    """Keep the answer for the key's retries (only while the claim is still this request's)."""
    db.session.execute(
        sa.update(IdempotencyKey)
        .where(*_held_by(claim))
        .values(response_status=response.status, response_headers=[list(pair) for pair in response.headers],
                response_body=secret_box.encrypt_bytes(response.body) if response.body else None,
                locked_until=None),
        bind_arguments={"bind": autocommit_engine()},
        execution_options={"synchronize_session": False},
    )


def release(claim: Claim) -> None:
    """Forget the claim: the request failed in a way a retry may fix (a 5xx, a 429)."""
    db.session.execute(
        sa.delete(IdempotencyKey).where(*_held_by(claim)),
        bind_arguments={"bind": autocommit_engine()},
        execution_options={"synchronize_session": False},
    )


def _held_by(claim: Claim) -> tuple[sa.ColumnElement[bool], ...]:
    return (IdempotencyKey.user_id == claim.user_id, IdempotencyKey.key == claim.key,
            IdempotencyKey.locked_until == claim.locked_until, IdempotencyKey.response_status.is_(None))


def expired(now: datetime) -> sa.ColumnElement[bool]:
    """Records past their retention (app.services.maintenance purges them; a claim ignores them)."""
    return IdempotencyKey.created_at < now - RETENTION

