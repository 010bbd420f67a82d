"""Every Celery setting: broker, queues, routes, limits and the beat schedule.

Tasks are named `<kind>.<action>`; the kind is the queue, so operators can give each kind of work
its own workers (`celery -A workers worker -Q sends`).
"""
import os

from kombu import Queue
from kombu.transport import TRANSPORT_ALIASES as transport_aliases
from kombu.transport import redis as kombu_redis

from app import task_names as tasks
from app.config import beat_sweep_seconds

broker_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


class RedisTransport(kombu_redis.Transport):
    """Kombu's Redis transport, except that it keeps its connection's details once closed.

    When the broker goes away, Celery's consumer (5.7) first collects the broken connection, which
    closes its channel (that close fails half-way on the dead socket) and then drops the
    transport's `client`; it then closes the connection again, and the channel, still open, tries
    to requeue its unacknowledged messages through a pool built from `transport.client`, now None:
    AttributeError, which no error handler expects, and the worker exits ("Unrecoverable error").
    Tasks still running when the connection broke later acknowledge through the same old channel
    and would meet the same None. With the details kept, both reach Redis like any other command:
    they succeed once Redis is back, or fail with a connection error that Celery handles (a message
    left unacknowledged is redelivered after the visibility timeout; tasks are safe to run twice).
    """

    @property
    def client(self):
        return self._client

    @client.setter
    def client(self, connection) -> None:
        if connection is not None:  # closing drops it only to break a reference cycle
            self._client = connection


# Registered under Kombu's own names for Redis URLs rather than through `broker_transport`, so
# connections still read `redis://...` (Flower picks its broker client by that scheme). This module
# is loaded when the Celery app first reads its configuration, before it opens any connection.
transport_aliases.update(dict.fromkeys(("redis", "rediss"), f"{__name__}:RedisTransport"))
# Ride out a broker restart of any length: start before Redis is up, and after losing it retry
# for ever (the default gives up after 100 tries, and the worker would exit).
broker_connection_retry_on_startup = True
broker_connection_retry = True
broker_connection_max_retries = None
# A task running when the broker connection breaks goes on: its work is in PostgreSQL, and a
# sender cut off mid-send would leave its in-flight messages `unknown`.
worker_cancel_long_running_tasks_on_connection_loss = False

QUEUES = ("maintenance", "sources", "events", "campaigns", "sends", "assistant", "webhooks", "default")
task_queues = tuple(Queue(name) for name in QUEUES)
task_default_queue = "default"
task_routes = {f"{name}.*": {"queue": name} for name in QUEUES if name != "default"}

include = [
    "workers.maintenance", "workers.accounts", "workers.events", "workers.sources", "workers.campaigns", "workers.sends",
    "workers.assistant", "workers.webhooks",
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
#   launch_due       when a scheduled campaign starts, an A/B test's winner is chosen, or a flow step
#                    falls due (its dispatch runs in the same sweep): within 15 s of its time
#                    (BEAT_LAUNCH_DUE_SECONDS may make it sooner)
#   reap_stalled     settles expired send leases (SEND_LEASE_SECONDS, 30 s) and restarts stalled
#                    channels: every 10 s (BEAT_REAP_STALLED_SECONDS may make it more often)
#   process_pending  events every ingest already hinted; a lost hint waits at most a minute
#   send_pending_verifications, reply_pending  mail/replies a lost message left (grace: 1 minute)
#   reap_stale_syncs sync runs whose worker vanished (their lease is 10 minutes)
#   resume_deletions account deletions whose worker died (10 minutes without progress)
#   sync_all         also resumes the Shopify webhook registrations and removals a lost task or a long
#                    outage left (10 minutes without progress)
#   deliver_webhooks outbox rows no run was hinted for or woken for (a lost message: runs are
#                    started by the events themselves, and wake themselves for retries)
LAUNCH_DUE_SECONDS, REAP_STALLED_SECONDS = beat_sweep_seconds()
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
    tasks.APPLY_RETENTION: {
        "task": tasks.APPLY_RETENTION,
        "schedule": 86400.0,
    },
    tasks.LAUNCH_DUE: {
        "task": tasks.LAUNCH_DUE,
        "schedule": float(LAUNCH_DUE_SECONDS),
    },
    tasks.REAP_STALLED: {
        "task": tasks.REAP_STALLED,
        # Rows of a worker that died settle as `unknown` within a lease (SEND_LEASE_SECONDS) of its
        # death plus this.
        "schedule": float(REAP_STALLED_SECONDS),
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
    tasks.RESUME_ACCOUNT_DELETIONS: {
        "task": tasks.RESUME_ACCOUNT_DELETIONS,
        "schedule": 600.0,
    },
    tasks.DELIVER_WEBHOOKS: {
        "task": tasks.DELIVER_WEBHOOKS,
        "schedule": 300.0,
    },
    tasks.PURGE_WEBHOOK_EVENTS: {
        "task": tasks.PURGE_WEBHOOK_EVENTS,
        "schedule": 86400.0,
    },
}
