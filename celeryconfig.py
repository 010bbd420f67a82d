"""Every Celery setting: broker, queues, routes, limits and the beat schedule.

Tasks are named `<kind>.<action>`; the kind is the queue, so operators can give each kind of work
its own workers (`celery -A workers worker -Q sends`).
"""
import os

from kombu import Queue

from app import task_names as tasks

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

# Beat's sweeps are backstops: the work they find was normally handed to a worker already (each task
# is published after its commit). An idle platform sends about 75 sweeps in 9 minutes (Flower lists
# each one), so each runs only as often as the delay it bounds is worth:
#   launch_due       when a scheduled campaign starts: within 15 s of its scheduledAt
#   reap_stalled     settles expired send leases (SEND_LEASE_SECONDS, 120 s) and restarts stalled channels
#   process_pending  events every ingest already hinted; a lost hint waits at most a minute
#   send_pending_verifications, reply_pending  mail/replies a lost message left (grace: 1 minute)
#   reap_stale_syncs sync runs whose worker vanished (their lease is 10 minutes)
beat_schedule = {
    tasks.PURGE_TOKEN_BLACKLIST: {
        "task": tasks.PURGE_TOKEN_BLACKLIST,
        "schedule": 3600.0,
    },
    tasks.PURGE_DEDUPE_KEYS: {
        "task": tasks.PURGE_DEDUPE_KEYS,
        "schedule": 86400.0,
    },
    tasks.PURGE_HELD_RECEIPTS: {
        "task": tasks.PURGE_HELD_RECEIPTS,
        "schedule": 86400.0,
    },
    tasks.LAUNCH_DUE: {
        "task": tasks.LAUNCH_DUE,
        "schedule": 15.0,
    },
    tasks.REAP_STALLED: {
        "task": tasks.REAP_STALLED,
        "schedule": 30.0,
    },
    tasks.PROCESS_PENDING: {
        "task": tasks.PROCESS_PENDING,
        "schedule": 60.0,
    },
    tasks.SEND_PENDING_VERIFICATIONS: {
        "task": tasks.SEND_PENDING_VERIFICATIONS,
        "schedule": 120.0,
    },
    tasks.SYNC_ALL: {
        "task": tasks.SYNC_ALL,
        "schedule": 300.0,
    },
    tasks.REAP_STALE_SYNCS: {
        "task": tasks.REAP_STALE_SYNCS,
        "schedule": 300.0,
    },
    tasks.ASSISTANT_REPLY_PENDING: {
        "task": tasks.ASSISTANT_REPLY_PENDING,
        "schedule": 120.0,
    },
}
