"""Event processing tasks (queue `events`)."""
from celery import shared_task

from app import task_names as tasks
from app.services import event_processing


@shared_task(name=tasks.PROCESS_PENDING)
def process_pending() -> int:
    """Beat sweep and post-ingest hint alike: drain pending events (safe to run many at once)."""
    return event_processing.process_pending()
