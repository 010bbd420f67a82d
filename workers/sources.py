"""Data source sync tasks (queue `sources`)."""
import uuid
from collections.abc import Callable

from celery import Task, shared_task

from app import task_names as tasks
from app.services import shopify_webhooks, source_syncs
from app.sources.http import TransientProviderError

MAX_RETRIES = 5
# A provider outage is retried a few times with growing, jittered delays (never more than two
# minutes: no long ETAs); the task decides what the last failure means.
RETRIED_ON_OUTAGE = {"bind": True, "acks_late": True, "autoretry_for": (TransientProviderError,),
                     "retry_backoff": True, "retry_backoff_max": 120, "retry_jitter": True,
                     "max_retries": MAX_RETRIES}


def _until_the_last_retry(task: Task, work: Callable[[], object], last_failure: Callable[[str], object]) -> None:
    """Run `work`; an outage is retried (RETRIED_ON_OUTAGE) until the last retry, whose failure is
    handed to `last_failure` instead of failing the task."""
    try:
        work()
    except TransientProviderError as exc:
        if task.request.retries >= MAX_RETRIES:
            last_failure(str(exc))
            return
        raise


# After the last retry the run is failed, so the next schedule starts afresh.
@shared_task(name=tasks.SYNC, **RETRIED_ON_OUTAGE)
def sync(self: Task, run_id: str) -> None:
    _until_the_last_retry(self, lambda: source_syncs.run_sync(uuid.UUID(run_id)),
                          lambda error: source_syncs.fail_run(uuid.UUID(run_id), error))


@shared_task(name=tasks.SYNC_ALL)
def sync_all() -> int:
    """Beat: start a sync for every active source that has none running, and resume the Shopify
    webhook registrations and removals left waiting (one sweep for both)."""
    started = source_syncs.schedule_all()
    shopify_webhooks.resume_waiting()
    return started


@shared_task(name=tasks.REAP_STALE_SYNCS)
def reap_stale_syncs() -> int:
    """Beat: fail runs whose worker was lost, so their sources can sync again."""
    return source_syncs.reap_stale_syncs()


# Registering and removing Shopify webhook subscriptions: an outage is retried like a sync; after
# the last retry beat's sweep takes it up again (and a registration is given up in the end).
@shared_task(name=tasks.REGISTER_SHOPIFY_WEBHOOKS, **RETRIED_ON_OUTAGE)
def register_shopify_webhooks(self: Task, source_id: str) -> None:
    _until_the_last_retry(self, lambda: shopify_webhooks.register(uuid.UUID(source_id)),
                          lambda error: shopify_webhooks.give_up(uuid.UUID(source_id), error))


@shared_task(name=tasks.REMOVE_SHOPIFY_WEBHOOKS, **RETRIED_ON_OUTAGE)
def remove_shopify_webhooks(self: Task, removal_id: str) -> None:
    _until_the_last_retry(self, lambda: shopify_webhooks.remove(uuid.UUID(removal_id)),
                          lambda error: None)  # beat's sweep tries again later

