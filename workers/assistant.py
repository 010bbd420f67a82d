"""Assistant tasks (queue `assistant`)."""
import uuid

from celery import shared_task
from sqlalchemy.exc import OperationalError

from app import task_names as tasks
from app.services import assistant


# The service turns every failure of the model or of a tool into an apology message; what reaches
# here is the database failing before anything was written, which is safe to retry (the reply is
# claimed and checked again each time). Limits sit above the service's own deadline for model rounds.
@shared_task(name=tasks.ASSISTANT_REPLY, acks_late=True, autoretry_for=(OperationalError,), retry_backoff=True,
             retry_backoff_max=60, retry_jitter=True, max_retries=3, soft_time_limit=180, time_limit=210)
def reply(message_id: str) -> str | None:
    answer = assistant.reply(uuid.UUID(message_id))
    return None if answer is None else str(answer)


@shared_task(name=tasks.ASSISTANT_REPLY_PENDING)
def reply_pending() -> int:
    """Beat sweep: re-queue user messages whose reply a lost message never produced."""
    return assistant.reply_pending()
