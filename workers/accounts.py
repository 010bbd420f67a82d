"""Account tasks: mail, and deleting an account (queue `default`)."""
import uuid

from celery import shared_task

from app import task_names as tasks
from app.services import account_deletion, accounts, senders


@shared_task(name=tasks.SEND_VERIFICATION, autoretry_for=(OSError,), retry_backoff=True,
             retry_jitter=True, max_retries=5)
def send_verification_email(verification_id: str) -> bool:
    return accounts.send_verification_email(uuid.UUID(verification_id))


@shared_task(name=tasks.SEND_PENDING_VERIFICATIONS)
def send_pending_verifications() -> int:
    """Beat sweep: mail what a lost message or a failed send left unsent."""
    return sum(accounts.send_verification_email(vid) for vid in accounts.pending_verification_ids())


@shared_task(name=tasks.NOTIFY_DUPLICATE, autoretry_for=(OSError,), retry_backoff=True,
             retry_jitter=True, max_retries=5)
def notify_duplicate_registration(user_id: str) -> None:
    accounts.notify_duplicate_registration(uuid.UUID(user_id))


@shared_task(name=tasks.SEND_SENDER_CONFIRMATION, autoretry_for=(OSError,), retry_backoff=True,
             retry_jitter=True, max_retries=5)
def send_sender_confirmation(sender_id: str) -> bool:
    return senders.send_confirmation(uuid.UUID(sender_id))


@shared_task(name=tasks.DELETE_ACCOUNT)
def delete_account(user_id: str) -> bool:
    return account_deletion.delete_account(uuid.UUID(user_id))


@shared_task(name=tasks.RESUME_ACCOUNT_DELETIONS)
def resume_deletions() -> int:
    return account_deletion.resume_stalled()
