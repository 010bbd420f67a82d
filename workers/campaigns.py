"""Campaign tasks: launching due campaigns and keeping running ones moving (queue `campaigns`)."""
import uuid

from celery import shared_task

from app import task_names as tasks
from app.services import audiences, campaign_lifecycle, flows, sending


@shared_task(name=tasks.LAUNCH_DUE)
def launch_due() -> int:
    """Beat's sweep for what falls due: scheduled launches, A/B winners, and flow steps."""
    launched = len(campaign_lifecycle.launch_due())
    flows.dispatch_all_due()
    return launched


@shared_task(name=tasks.DISPATCH_FLOW_STEPS)
def dispatch_flow_steps() -> int:
    return flows.dispatch_all_due()


@shared_task(name=tasks.PREPARE_LEDGER)
def prepare_ledger(campaign_id: str) -> int:
    return campaign_lifecycle.prepare_ledger(uuid.UUID(campaign_id))


@shared_task(name=tasks.COUNT_AUDIENCES)
def count_unsized_audiences() -> int:
    return audiences.count_unsized_audiences()


@shared_task(name=tasks.REAP_STALLED)
def reap_stalled() -> dict[str, int]:
    return sending.reap_and_resume()
