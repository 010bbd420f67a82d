"""Campaign tasks: launching due campaigns and keeping running ones moving (queue `campaigns`)."""
from celery import shared_task

from app.services import campaign_lifecycle, sending


@shared_task(name="campaigns.launch_due")
def launch_due() -> int:
    return len(campaign_lifecycle.launch_due())


@shared_task(name="campaigns.reap_stalled")
def reap_stalled() -> dict[str, int]:
    return sending.reap_and_resume()
