"""Maintenance tasks (queue `maintenance`)."""
from celery import shared_task

from app import task_names as tasks
from app.services import maintenance


@shared_task(name=tasks.PURGE_TOKEN_BLACKLIST)
def purge_token_blacklist() -> dict[str, int]:
    result = maintenance.purge_expired_tokens()
    return {"blacklistedTokens": result.blacklisted_tokens, "sessions": result.sessions}


@shared_task(name=tasks.PURGE_DEDUPE_KEYS)
def purge_dedupe_keys() -> dict[str, int]:
    """Daily: providers' event ids past any redelivery, and API idempotency keys past their 24 hours."""
    return {"eventDedupeKeys": maintenance.purge_dedupe_keys(), "idempotencyKeys": maintenance.purge_idempotency_keys()}


@shared_task(name=tasks.PURGE_HELD_RECEIPTS)
def purge_held_receipts() -> int:
    return maintenance.purge_held_receipts()


@shared_task(name=tasks.APPLY_RETENTION)
def apply_retention() -> dict[str, int]:
    result = maintenance.apply_retention()
    return {"events": result.events, "sync_runs": result.sync_runs, "bounce_mail": result.bounce_mail}
