"""The send engine: a channel's queued ledger rows go out with many messages in flight, at the
rates of the provider account and the channel, and stop when the campaign is paused or cancelled.

One sender task works one channel for a while (TIME_BUDGET), keeping up to its account's
`in_flight` messages with the provider at once: the provider is called on a pool of threads while
this thread claims, prepares and records. Several sender tasks may work the same channel, on any
workers (`start_senders`); they share the rate limits through Redis and the rows through the ledger.

The order of work never changes: take rate tokens → claim rows (`sending`, with a lease) and COMMIT
→ prepare and hand each message to the provider → record outcomes as they come back (moving the
counters in the same statement). Rows are claimed only for free slots, so a worker killed anywhere
leaves at most its in-flight rows `sending`, which the reaper calls `unknown`. Nothing is ever
claimed twice, so nobody gets a message twice. The lease is short and a live sender renews it for
the rows it has in flight, so a slow provider keeps its rows while a dead worker's settle soon.
"""
from __future__ import annotations

import contextlib
import logging
import math
import time
import uuid
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import UTC, datetime, timedelta

import redis
from flask import current_app

from app import clock
from app import task_names as tasks
from app.channels.base import (
    OutgoingMessage,
    ProviderUnavailable,
    Refused,
    SenderBase,
    SendOutcome,
    UnsupportedChannel,
)
from app.channels.registry import SendAccount, account_for
from app.extensions import db, redis_client
from app.jobs import enqueue_after_commit
from app.models import Campaign, CampaignChannel
from app.models.contacts import zone_for
from app.services import ab_tests, bounces, contacts, send_policies, send_rate
from app.services import delivery_ledger as ledger
from app.services.delivery_ledger import ClaimedDelivery, Outcome
from app.services.rendering import contact_context

log = logging.getLogger(__name__)

# Seconds a sender task works before a fresh task carries on: senders rotate through the queue, so
# a worker that joins later (or another campaign) gets its turn within this long.
TIME_BUDGET = 30.0
MAX_PROVIDER_WAIT = 30.0  # the longest a provider's Retry-After holds an account's senders
RECORD_EVERY = 0.1  # seconds an outcome may wait before it is recorded
CLAIM_EVERY = 0.015  # seconds between claims while some slots are still busy
HOLD_CHECK_EVERY = 0.25  # seconds between looks at an account's hold when no rate limit applies
# A recipient the provider deferred (an SMTP 4xx) is tried again after SEND_RETRY_SECONDS, 2×, 4×, ...
# seconds, and fails after MAX_TRIES refusals in all.
MAX_TRIES = 5
MAX_RUN_WAIT = 5.0  # a limit that holds sending back longer ends the run instead of idling a worker
RESTART_EVERY = 60.0  # beat restarts a stalled channel at most this often
RENEWALS_PER_LEASE = 3  # a sender renews its rows' lease this often per lease: two may be late


def _resume_at(wait: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=wait)).strftime("%Y-%m-%d %H:%M:%S UTC")


# Why a claim was held back → the problem the channel's stats show.
PROBLEMS = {
    "hold": ("rate_limited", lambda wait: f"The provider asked to slow down; sending resumes at {_resume_at(wait)}."),
    "quota": ("quota_reached", lambda wait: f"The provider account's sending quota is used up; sending resumes "
                                            f"at {_resume_at(wait)}."),
}
# Queued rows that justify one more sender task on a channel (up to SEND_MAX_SENDERS_PER_CHANNEL).
ROWS_PER_SENDER = 200


def lease() -> timedelta:
    return timedelta(seconds=current_app.config["HERALD_SETTINGS"].send_lease_seconds)


def _max_wake_up() -> float:
    """The longest countdown a task waits for rows that are not due yet (SEND_WAKE_SECONDS): they
    are looked at again then, however far off they are, so a clock or setting change is noticed."""
    return float(current_app.config["HERALD_SETTINGS"].send_wake_seconds)


def retry_base() -> float:
    return float(current_app.config["HERALD_SETTINGS"].send_retry_seconds)


def start_senders(channel_id: uuid.UUID, queued: int) -> None:
    """Sender tasks for a channel with `queued` rows, once the transaction commits: more work, more
    senders, up to the cap. Those beyond what the workers can run at once wait in the queue and
    start as workers free up; one that finds nothing left to claim ends at once."""
    cap = current_app.config["HERALD_SETTINGS"].send_max_senders
    for _ in range(max(1, min(cap, math.ceil(queued / ROWS_PER_SENDER)))):
        enqueue_after_commit(tasks.SEND_BATCH, str(channel_id))


def send_channel(channel_id: uuid.UUID) -> int:
    """Send the channel's queued rows until done, paused, or out of time; messages handed over."""
    found = ledger.channel_info(channel_id)
    if found is None or found[0].status not in ("pending", "sending"):
        return 0
    channel, campaign = found
    run = _Run(channel, campaign)
    if ledger.next_due(channel.id) == 0:
        try:
            with contextlib.ExitStack() as stack:
                # Connect before claiming anything: a provider that can't be reached leaves the rows queued.
                account = _open_account(stack, channel, campaign)
                executor = stack.enter_context(ThreadPoolExecutor(account.in_flight, thread_name_prefix="send"))
                run.go(account, executor)
        except ProviderUnavailable as exc:
            run.unavailable = exc
    if run.broker_error is not None:
        # Redis went away mid-run: what was in flight is recorded, the rest stays queued for the
        # next sender (beat restarts the channel once Redis is back).
        raise run.broker_error
    if run.unavailable is not None:
        log.warning("provider unavailable: %s", run.unavailable, extra={"channel_id": str(channel.id)})
        ledger.report_problem(channel.id, "provider_unavailable", str(run.unavailable))
        db.session.commit()
        raise run.unavailable  # the task retries with backoff; the rows it handed back wait in the queue
    _continue_or_finish(channel, campaign, run.blocked_for)
    return run.handed


class _Unconfigured(SenderBase):
    """No provider for the channel: each claimed message fails, saying so."""

    def __init__(self, reason: str) -> None:
        self._reason = reason

    def prepare(self, message: OutgoingMessage) -> None:
        raise Refused(self._reason)


def _open_account(stack: contextlib.ExitStack, channel: CampaignChannel, campaign: Campaign) -> SendAccount:
    try:
        account = account_for(channel.channel_type, campaign.user_id)
    except UnsupportedChannel as exc:
        reason = f"No provider is configured for {channel.channel_type} messages: {exc}"
        return SendAccount(key=f"unconfigured:{channel.id}", sender=_Unconfigured(reason), in_flight=1)
    stack.enter_context(account.sender)
    return account


class _Run:
    """One sender task's work on one channel: slots kept full, outcomes recorded as they arrive.

    A deliberate multi-transaction loop: each claim is committed before its messages go out, and
    each group of outcomes is committed as it is recorded (with the next claim, when there is one).
    """

    def __init__(self, channel: CampaignChannel, campaign: Campaign) -> None:
        # Plain values, read once: the ORM objects expire at every commit, and reloading them for
        # each message would cost a query apiece.
        self.channel_id, self.channel_type, self.config = channel.id, channel.channel_type, dict(channel.config)
        self.campaign_id, self.user_id = campaign.id, campaign.user_id
        (self.policy,) = send_policies.channel_policies(campaign.user_id, campaign.id, [channel.channel_type],
                                                        channel.id)
        self.variant_configs = ab_tests.variant_configs(self.config)
        self.handed = 0
        self.unavailable: ProviderUnavailable | None = None
        self.broker_error: redis.RedisError | None = None
        self._in_flight: dict[Future[SendOutcome], ClaimedDelivery] = {}
        self._outcomes: list[Outcome] = []  # back from the provider, not yet recorded
        self._opted_out: list[uuid.UUID] = []
        self._gone: list[tuple[uuid.UUID, str]] = []  # (delivery, address) the provider called gone for good
        self._oldest_outcome = 0.0
        self._next_claim = 0.0  # not before: a rate limit's or a hold's wait
        self._last_claim = -CLAIM_EVERY
        self._hold_checked = 0.0
        self._reported = ""  # the hold-back reason this run last reported
        self._lease = lease()
        self._renew_at = time.monotonic() + self._lease.total_seconds() / RENEWALS_PER_LEASE
        self.blocked_for = 0.0  # seconds until sending may resume, when the run ended for a limit
        self._stopping = False

    def go(self, account: SendAccount, executor: ThreadPoolExecutor) -> None:
        self._account, self._executor = account, executor
        self._limits = send_rate.Limits(account.key, account.messages_per_second, f"channel:{self.channel_id}",
                                        self.config.get("messagesPerSecond"), account.per_hour, account.per_day)
        slots = account.in_flight
        deadline = time.monotonic() + TIME_BUDGET
        while True:
            # Outcomes not yet recorded still hold their rows `sending`, but the claim records them
            # in its own statement, so the rows a crash could leave `sending` never exceed `slots`.
            free = slots - len(self._in_flight)
            now = time.monotonic()
            if now >= deadline:
                self._stopping = True
            if not self._stopping and self._may_claim(free, slots, now):
                self._last_claim = now
                self._claim_and_hand_over(free)
            elif self._outcomes and (now - self._oldest_outcome >= RECORD_EVERY or not self._in_flight):
                self._record()
            if self._stopping and not self._in_flight:
                break
            if now >= self._renew_at:
                self._renew_leases(now)
            self._collect(self._wait_time(free))
        self._record()

    def _renew_leases(self, now: float) -> None:
        """Rows at the provider, or back from it and not yet recorded, keep their lease."""
        ids = [row.id for row in self._in_flight.values()] + [outcome.delivery_id for outcome in self._outcomes]
        ledger.renew_leases(ids, self._lease)
        self._renew_at = now + self._lease.total_seconds() / RENEWALS_PER_LEASE

    def _may_claim(self, free: int, slots: int, now: float) -> bool:
        """Claim when an eighth of the slots are free, but at most every CLAIM_EVERY unless all
        are: slots stay nearly full against a slow provider, and a fast one still costs one claim
        for many messages rather than one for every few."""
        if free < max(1, slots // 8) or now < self._next_claim:
            return False
        return now >= self._last_claim + CLAIM_EVERY or free == slots

    def _wait_time(self, free: int) -> float:
        if self._stopping or free < 1:
            return RECORD_EVERY
        ready = max(self._next_claim, self._last_claim + CLAIM_EVERY)
        return max(0.0, min(RECORD_EVERY, ready - time.monotonic()))

    def _claim_and_hand_over(self, free: int) -> None:
        grant = self._take(free)
        if not grant.count:
            self._held_back(grant)
            return
        claimed = self._record(claim=grant.count)  # the outcomes so far ride in the claim's statement
        if not claimed:
            send_rate.give_back(self._limits, grant.count)
            # Nothing queued, or the campaign is no longer running. A message still in flight may
            # yet come back to the queue (rate limited): look again once nothing is.
            self._stopping = not self._in_flight
            self._next_claim = time.monotonic() + RECORD_EVERY
            return
        claimed = self._admitted(claimed)
        send_rate.give_back(self._limits, grant.count - len(claimed))
        self._account.sender.preload([row.contact_id for row in claimed if row.contact_id is not None])
        for index, row in enumerate(claimed):
            try:
                prepared = self._prepare(row)
            except ProviderUnavailable as exc:
                # Nothing of this row or the ones after it went out: all go back to the queue.
                self._stop_unavailable(exc)
                self._settle(*(Outcome(r.id, "queued", error=str(exc)) for r in claimed[index:]))
                return
            except Refused as exc:
                self._settle(Outcome(row.id, "failed", error=str(exc)))
                continue
            self._in_flight[self._executor.submit(self._account.sender.transmit, prepared)] = row

    def _admitted(self, claimed: list[ClaimedDelivery]) -> list[ClaimedDelivery]:
        """The claimed rows the send policies let go out now; the others went back to the queue
        (quiet hours) or were skipped (a frequency cap), committed before anything is sent."""
        if not claimed or not (self.policy.quiet or self.policy.caps):
            return claimed
        default = self.policy.default_zone
        held = send_policies.admit(self.policy, self.channel_type, [
            send_policies.Claimed(row.id, row.contact_id,
                                  zone_for(row.own_zone, row.contact.phone if row.contact else None, default))
            for row in claimed], clock.now())
        return [row for row in claimed if row.id not in held] if held else claimed

    def _prepare(self, row: ClaimedDelivery) -> object:
        if row.contact is None:
            raise Refused("The contact was deleted before the message was sent.")
        config = self.config
        if self.variant_configs is not None and row.variant is not None:
            config = self.variant_configs[row.variant]
        message = OutgoingMessage(
            delivery_id=row.id, campaign_id=self.campaign_id, channel_id=self.channel_id, contact_id=row.contact.id,
            user_id=self.user_id, address=row.address, contact=contact_context(row.contact), config=config,
            event=row.event,
        )
        return self._account.sender.prepare(message)

    def _collect(self, timeout: float) -> None:
        if not self._in_flight:
            if timeout > 0:
                time.sleep(timeout)
            return
        done, _ = wait(self._in_flight, timeout=timeout, return_when=FIRST_COMPLETED)
        for future in done:
            self._settle(self._outcome(self._in_flight.pop(future), future))

    def _outcome(self, row: ClaimedDelivery, future: Future[SendOutcome]) -> Outcome:
        try:
            result = future.result()
        except ProviderUnavailable as exc:
            self._stop_unavailable(exc)
            return Outcome(row.id, "queued", error=str(exc))
        except Exception as exc:  # noqa: BLE001 — the provider may have taken it: never retry, report it
            log.error("send outcome unknown: %s: %s", type(exc).__name__, exc, extra={"delivery_id": str(row.id)})
            return Outcome(row.id, "unknown", error=f"{type(exc).__name__}: {exc}")
        if result.opted_out and row.contact_id:
            self._opted_out.append(row.contact_id)
        self._gone.extend((row.id, address) for address in result.gone)
        if result.accepted:
            self.handed += 1
            return Outcome(row.id, "delivered" if result.delivered else "sent", result.provider_message_id)
        if result.deferred:
            return self._deferred(row, result.error or "Deferred by the provider.")
        if result.retry_after is not None:
            # The provider asked to slow down: this row goes back to the queue untried, and every
            # sender of the account waits as asked (bounded) before claiming more.
            send_rate.hold(self._limits, min(result.retry_after, MAX_PROVIDER_WAIT))
            self._hold_checked = 0.0  # this sender heeds it at once; the others within HOLD_CHECK_EVERY
            return Outcome(row.id, "queued", error=result.error)
        return Outcome(row.id, "failed", error=result.error or "Refused by the provider.")

    def _deferred(self, row: ClaimedDelivery, error: str) -> Outcome:
        """Only this recipient waits: the row goes back to the queue until its next try is due."""
        tries = row.attempts + 1
        if tries >= MAX_TRIES:
            return Outcome(row.id, "failed", error=f"{error} (refused {tries} times; not tried again)")
        return Outcome(row.id, "queued", error=error, retry_in=retry_base() * 2 ** row.attempts)

    def _stop_unavailable(self, exc: ProviderUnavailable) -> None:
        self.unavailable = self.unavailable or exc
        self._stopping = True

    def _settle(self, *outcomes: Outcome) -> None:
        if not self._outcomes:
            self._oldest_outcome = time.monotonic()
        self._outcomes.extend(outcomes)

    def _take(self, wanted: int) -> send_rate.Grant:
        """Rate tokens and quota, when any applies; otherwise only the account's hold matters, and
        it is looked up now and then rather than before every claim."""
        now = time.monotonic()
        if self._limits.counted or now >= self._hold_checked + HOLD_CHECK_EVERY:
            try:
                grant = send_rate.take(self._limits, wanted)
            except redis.RedisError as exc:
                # The limits can't be read: claim nothing more, but record what is in flight.
                log.warning("rate limits unreachable: %s", exc, extra={"channel_id": str(self.channel_id)})
                self.broker_error, self._stopping = exc, True
                return send_rate.Grant(0, RECORD_EVERY, "")
            self._hold_checked = now if grant.count else 0.0
            return grant
        return send_rate.Grant(wanted, 0.0, "")

    def _held_back(self, grant: send_rate.Grant) -> None:
        """Nothing may go out now. The channel's own pace is no trouble; a provider's hold or a
        used-up quota is, and the stats say so. A long wait ends the run: a later task resumes."""
        if self._outcomes:
            self._record()
        if self._in_flight:
            # Messages still out come back first (their success would clear a problem said now).
            self._next_claim = time.monotonic() + min(grant.wait, RECORD_EVERY)
            return
        if grant.reason in PROBLEMS and grant.reason != self._reported:
            code, describe = PROBLEMS[grant.reason]
            ledger.report_problem(self.channel_id, code, describe(grant.wait))
            db.session.commit()
            self._reported = grant.reason
        if grant.wait > MAX_RUN_WAIT:
            self.blocked_for, self._stopping = grant.wait, True
        self._next_claim = time.monotonic() + min(grant.wait, 1.0)

    def _record(self, claim: int = 0) -> list[ClaimedDelivery]:
        """Record the outcomes so far and claim `claim` more rows, in one self-committing statement."""
        outcomes, self._outcomes = self._outcomes, []
        opted_out, self._opted_out = self._opted_out, []
        gone, self._gone = self._gone, []
        claimed = ledger.settle(self.channel_id, self.channel_type, outcomes, claim, self._lease) \
            if outcomes or claim else []
        for contact_id in opted_out:
            contacts.record_opt_out(contact_id, [self.channel_type], source="provider")
        if gone:
            bounces.record_gone(self.channel_type, gone)
        db.session.commit()
        return claimed


def _continue_or_finish(channel: CampaignChannel, campaign: Campaign, blocked_for: float = 0.0) -> None:
    """Rows still queued: a fresh task carries on (at once, or when the next deferred row is due
    or a quota's window opens). Otherwise settle the channel (and the campaign, if it was the last)."""
    due_in = ledger.next_due(channel.id) if ledger.campaign_status(campaign.id) == "running" else None
    if due_in is not None:
        due_in = max(due_in, blocked_for)
    if due_in is None:
        ledger.finish_done_channels(campaign.id)
    elif due_in == 0:
        enqueue_after_commit(tasks.SEND_BATCH, str(channel.id))
    elif _first_to_claim("wake", channel.id, min(due_in, _max_wake_up())):
        enqueue_after_commit(tasks.SEND_BATCH, str(channel.id), countdown=min(due_in, _max_wake_up()))
    db.session.commit()


def _first_to_claim(what: str, channel_id: uuid.UUID, seconds: float) -> bool:
    """True for the first caller in `seconds` to claim `what` for the channel: one waiting task for
    its deferred rows however many senders end meanwhile; one restart per minute however many
    beats tick."""
    return bool(redis_client().set(f"herald:{what}:channel:{channel_id}", b"1", nx=True,
                                   px=max(1, int(seconds * 1000))))


def wake_senders(channel_ids: list[uuid.UUID]) -> int:
    """One sender for each channel that may have none at work (queued rows nobody is sending, or
    rows a launch just queued on an idle channel), at most once per RESTART_EVERY however many
    beats or chunks ask. Returns the senders started."""
    woken = 0
    for channel_id in channel_ids:
        if _first_to_claim("resume", channel_id, RESTART_EVERY):
            enqueue_after_commit(tasks.SEND_BATCH, str(channel_id))
            woken += 1
    return woken


def reap_and_resume() -> dict[str, int]:
    """Beat: settle rows whose worker died, apply receipts that raced their message's recording,
    finish channels that are done, and restart sending for running campaigns whose queued rows
    nobody is working on (a lost message, a killed worker)."""
    campaigns = set(ledger.reap_expired_leases())
    ledger.apply_matched_held_receipts()
    resumed = wake_senders([channel_id for _, channel_id, _ in ledger.unsettled_channels()])
    campaigns |= set(ledger.running_campaigns_without_work())
    for campaign_id in campaigns:
        ledger.finish_done_channels(campaign_id)
    db.session.commit()
    return {"campaigns": len(campaigns), "resumed": resumed}

