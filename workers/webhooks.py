"""Outgoing webhook tasks: delivering the outbox (queue `webhooks`) and purging old events."""
from celery import shared_task

from app import task_names as tasks
from app.services import webhook_delivery


@shared_task(name=tasks.DELIVER_WEBHOOKS)
def deliver_due() -> int:
    return webhook_delivery.deliver_due()


@shared_task(name=tasks.PURGE_WEBHOOK_EVENTS)
def purge_webhook_events() -> int:
    return webhook_delivery.purge_old()
