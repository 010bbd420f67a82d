"""Maintenance tasks (queue `maintenance`)."""
from celery import shared_task

from app.services import maintenance


@shared_task(name="maintenance.purge_token_blacklist")
def purge_token_blacklist() -> dict[str, int]:
    result = maintenance.purge_expired_tokens()
    return {"blacklistedTokens": result.blacklisted_tokens, "sessions": result.sessions}


@shared_task(name="maintenance.purge_dedupe_keys")
def purge_dedupe_keys() -> int:
    return maintenance.purge_dedupe_keys()


@shared_task(name="maintenance.purge_held_receipts")
def purge_held_receipts() -> int:
    return maintenance.purge_held_receipts()
