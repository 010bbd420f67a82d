"""Data source sync tasks (queue `sources`)."""
import uuid

from celery import Task, shared_task

from app import task_names as tasks
from app.services import source_syncs
from app.sources.http import TransientProviderError

MAX_RETRIES = 5


# A provider outage is retried a few times with growing, jittered delays (never more than two
# minutes: no long ETAs); after the last one the run is failed so the next schedule starts afresh.
@shared_task(bind=True, name=tasks.SYNC, acks_late=True, autoretry_for=(TransientProviderError,),
             retry_backoff=True, retry_backoff_max=120, retry_jitter=True, max_retries=MAX_RETRIES)
def sync(self: Task, run_id: str) -> None:
    try:
        source_syncs.run_sync(uuid.UUID(run_id))
    except TransientProviderError as exc:
        if self.request.retries >= MAX_RETRIES:
            source_syncs.fail_run(uuid.UUID(run_id), str(exc))
            return
        raise


@shared_task(name=tasks.SYNC_ALL)
def sync_all() -> int:
    """Beat: start a sync for every active source that has none running."""
    return source_syncs.schedule_all()


@shared_task(name=tasks.REAP_STALE_SYNCS)
def reap_stale_syncs() -> int:
    """Beat: fail runs whose worker was lost, so their sources can sync again."""
    return source_syncs.reap_stale_syncs()
