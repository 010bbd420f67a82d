"""Send tasks (queue `sends`): one channel's queued ledger rows, in batches."""
import uuid

from celery import shared_task

from app import task_names as tasks
from app.channels.base import ProviderUnavailable
from app.services import sending


@shared_task(name=tasks.SEND_BATCH, autoretry_for=(ProviderUnavailable,), retry_backoff=5,
             retry_backoff_max=120, retry_jitter=True, max_retries=8)
def send_batch(channel_id: str) -> int:
    return sending.send_channel(uuid.UUID(channel_id))
