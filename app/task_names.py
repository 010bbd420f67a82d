"""Every Celery task's name, in one place: the task decorators (workers/), every enqueue
(app.jobs.enqueue_after_commit from services) and beat's schedule (celeryconfig) use these.

Names are `<kind>.<action>`; the kind is the task's queue (celeryconfig routes `<kind>.*` there).
"""
SEND_VERIFICATION = "accounts.send_verification_email"
SEND_PENDING_VERIFICATIONS = "accounts.send_pending_verifications"
NOTIFY_DUPLICATE = "accounts.notify_duplicate_registration"
SEND_SENDER_CONFIRMATION = "accounts.send_sender_confirmation"
DELETE_ACCOUNT = "accounts.delete_account"
RESUME_ACCOUNT_DELETIONS = "accounts.resume_deletions"
ASSISTANT_REPLY = "assistant.reply"
ASSISTANT_REPLY_PENDING = "assistant.reply_pending"
COUNT_AUDIENCES = "campaigns.count_unsized_audiences"
LAUNCH_DUE = "campaigns.launch_due"
DISPATCH_FLOW_STEPS = "campaigns.dispatch_flow_steps"
PREPARE_LEDGER = "campaigns.prepare_ledger"
REAP_STALLED = "campaigns.reap_stalled"
PROCESS_PENDING = "events.process_pending"
PURGE_TOKEN_BLACKLIST = "maintenance.purge_token_blacklist"
PURGE_DEDUPE_KEYS = "maintenance.purge_dedupe_keys"
PURGE_HELD_RECEIPTS = "maintenance.purge_held_receipts"
APPLY_RETENTION = "maintenance.apply_retention"
SEND_BATCH = "sends.send_batch"
SYNC = "sources.sync"
SYNC_ALL = "sources.sync_all"
REAP_STALE_SYNCS = "sources.reap_stale_syncs"
REGISTER_SHOPIFY_WEBHOOKS = "sources.register_shopify_webhooks"
REMOVE_SHOPIFY_WEBHOOKS = "sources.remove_shopify_webhooks"
DELIVER_WEBHOOKS = "webhooks.deliver_due"
PURGE_WEBHOOK_EVENTS = "maintenance.purge_webhook_events"

ALL = (
    SEND_VERIFICATION,
    SEND_PENDING_VERIFICATIONS,
    NOTIFY_DUPLICATE,
    SEND_SENDER_CONFIRMATION,
    DELETE_ACCOUNT,
    RESUME_ACCOUNT_DELETIONS,
    ASSISTANT_REPLY,
    ASSISTANT_REPLY_PENDING,
    COUNT_AUDIENCES,
    LAUNCH_DUE,
    DISPATCH_FLOW_STEPS,
    PREPARE_LEDGER,
    REAP_STALLED,
    PROCESS_PENDING,
    PURGE_TOKEN_BLACKLIST,
    PURGE_DEDUPE_KEYS,
    PURGE_HELD_RECEIPTS,
    APPLY_RETENTION,
    SEND_BATCH,
    SYNC,
    SYNC_ALL,
    REAP_STALE_SYNCS,
    REGISTER_SHOPIFY_WEBHOOKS,
    REMOVE_SHOPIFY_WEBHOOKS,
    DELIVER_WEBHOOKS,
    PURGE_WEBHOOK_EVENTS,
)
