"""Every Celery setting: broker, queues, routes, limits and the beat schedule.

Tasks are named `<kind>.<action>`; the kind is the queue, so operators can give each kind of work
its own workers (`celery -A workers worker -Q sends`).
"""
import os

from kombu import Queue

broker_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
broker_connection_retry_on_startup = True

QUEUES = ("maintenance", "sources", "events", "campaigns", "sends", "assistant", "default")
task_queues = tuple(Queue(name) for name in QUEUES)
task_default_queue = "default"
task_routes = {f"{name}.*": {"queue": name} for name in QUEUES if name != "default"}

include = [
    "workers.maintenance", "workers.accounts", "workers.events", "workers.sources", "workers.campaigns", "workers.sends",
    "workers.assistant",
]

# Every task is written to be safe to run twice (ids in, state read from the database), so a message
# is acknowledged only after the task finishes and is redelivered if the worker dies mid-task.
task_acks_late = True
task_reject_on_worker_lost = True
task_soft_time_limit = 240
task_time_limit = 300
# Redis redelivers an unacknowledged message after the visibility timeout; it must exceed the
# longest a task can run (the hard limit) or a slow task would be handed to a second worker.
broker_transport_options = {"visibility_timeout": 3600}
# Tasks are short; a small prefetch keeps work spread over processes without idling between tasks.
worker_prefetch_multiplier = 4
worker_max_tasks_per_child = 1000

task_ignore_result = True
result_backend = None

task_serializer = "json"
accept_content = ["json"]
timezone = "UTC"
enable_utc = True

# Flower reads these events.
worker_send_task_events = True
task_send_sent_event = True
worker_hijack_root_logger = False

beat_schedule = {
    "maintenance.purge_token_blacklist": {
        "task": "maintenance.purge_token_blacklist",
        "schedule": 3600.0,
    },
    "maintenance.purge_dedupe_keys": {
        "task": "maintenance.purge_dedupe_keys",
        "schedule": 86400.0,
    },
    "maintenance.purge_held_receipts": {
        "task": "maintenance.purge_held_receipts",
        "schedule": 86400.0,
    },
    "campaigns.launch_due": {
        "task": "campaigns.launch_due",
        "schedule": 5.0,
    },
    "campaigns.reap_stalled": {
        "task": "campaigns.reap_stalled",
        "schedule": 30.0,
    },
    "events.process_pending": {
        "task": "events.process_pending",
        "schedule": 10.0,
    },
    "accounts.send_pending_verifications": {
        "task": "accounts.send_pending_verifications",
        "schedule": 60.0,
    },
    "sources.sync_all": {
        "task": "sources.sync_all",
        "schedule": 300.0,
    },
    "sources.reap_stale_syncs": {
        "task": "sources.reap_stale_syncs",
        "schedule": 60.0,
    },
    "assistant.reply_pending": {
        "task": "assistant.reply_pending",
        "schedule": 60.0,
    },
}
