"""Send policies: when each recipient may get a message, and whether they may get it at all.

- **Local time.** A campaign scheduled with `recipientLocalTime` goes to each recipient at that
  wall-clock time in their own zone (app.models.contacts.zone_for). A zone already past it at
  launch gets it at the same time the next day, or is skipped (`local_time_passed`), as the
  campaign says.
- **Quiet hours** (merchant settings, per channel, in the recipient's local time). A message due
  inside them waits until they end (`deferredBy = quiet_hours`): decided when the ledger is written
  and checked again when a row is claimed, since a big or rate-limited send can run into them.
- **Frequency caps** (merchant settings, per channel, across all campaigns): a contact who already
  had `messages` messages on the channel in the last `window_hours` is skipped with
  `frequency_capped`. Decided when a row is claimed, under a lock per contact and channel, so two
  campaigns reaching one contact at once are counted one after the other. A campaign marked
  `frequencyCapExempt` ignores the caps; its messages still count toward them.

The ledger (app.services.delivery_ledger) writes the planned times; the send engine calls
`admit` on each claim. Both read the time from app.clock.
"""
from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from app.extensions import autocommit_engine, db
from app.models import CampaignSendOptions, FlowStep
from app.services import bulk_sql
from app.services.settings import get_settings

QUIET_HOURS = "quiet_hours"
LOCAL_TIME = "local_time"
PROVIDER = "provider"
FREQUENCY_CAPPED = "frequency_capped"
LOCAL_TIME_PASSED = "local_time_passed"


@dataclass(frozen=True)
class QuietHours:
    start: time
    end: time

    @classmethod
    def parse(cls, setting: dict[str, str] | None) -> QuietHours | None:
        if not setting:
            return None
        return cls(time.fromisoformat(setting["start"]), time.fromisoformat(setting["end"]))

    def ends(self, local: datetime) -> datetime | None:
        """When the quiet hours `local` (an aware local time) falls in end, in the same zone; None
        when it is outside them. They may span midnight (21:00–08:00)."""
        clock = local.time().replace(tzinfo=None)
        if self.start < self.end:
            inside = self.start <= clock < self.end
            day = local.date()
        else:
            inside = clock >= self.start or clock < self.end
            day = local.date() + timedelta(days=1) if clock >= self.start else local.date()
        if not inside:
            return None
        return datetime.combine(day, self.end, tzinfo=local.tzinfo)


@dataclass(frozen=True)
class Cap:
    messages: int
    window_hours: float


@dataclass(frozen=True)
class Plan:
    """When a row may first go out (naive UTC), what made it wait (None: nothing), or why it is
    skipped instead."""

    not_before: datetime
    deferred_by: str | None = None
    skip_reason: str | None = None


@dataclass(frozen=True)
class ChannelPolicy:
    default_zone: str
    quiet: QuietHours | None
    caps: tuple[Cap, ...]
    local_time: datetime | None  # the wall-clock time recipients get it at, in their own zone
    skip_passed: bool
    exempt: bool

    @property
    def needs_zones(self) -> bool:
        return self.quiet is not None or self.local_time is not None

    def plan(self, zone: str, now: datetime) -> Plan:
        """The row's planned time for a recipient in `zone`, the ledger being written at `now`."""
        start, by = now, None
        tz = ZoneInfo(zone)
        if self.local_time is not None:
            target = _utc(self.local_time.replace(tzinfo=tz))
            if target < now:
                if self.skip_passed:
                    return Plan(now, skip_reason=LOCAL_TIME_PASSED)
                target = _utc((self.local_time + timedelta(days=1)).replace(tzinfo=tz))
            start, by = target, LOCAL_TIME
        quiet_end = self.quiet_end(start, tz)
        if quiet_end is not None:
            start, by = quiet_end, QUIET_HOURS
        return Plan(start, by)

    def quiet_end(self, at: datetime, tz: ZoneInfo) -> datetime | None:
        """When the recipient's quiet hours around `at` (naive UTC) end (naive UTC); None: not quiet."""
        if self.quiet is None:
            return None
        ends = self.quiet.ends(at.replace(tzinfo=ZoneInfo("UTC")).astimezone(tz))
        return None if ends is None else _utc(ends)


def _utc(aware: datetime) -> datetime:
    return aware.astimezone(ZoneInfo("UTC")).replace(tzinfo=None)


def channel_policies(user_id: uuid.UUID, campaign_id: uuid.UUID, channel_types: Sequence[str],
                     channel_id: uuid.UUID | None = None) -> list[ChannelPolicy]:
    """The policy of each of the campaign's channel types, from one read of the settings (for one
    channel, `channel_id`: a flow step may be exempt from the caps on its own)."""
    settings = get_settings(user_id)
    options = db.session.get(CampaignSendOptions, campaign_id)
    exempt = bool(options and options.frequency_cap_exempt) or (channel_id is not None and bool(db.session.scalar(
        sa.select(FlowStep.frequency_cap_exempt).where(FlowStep.channel_id == channel_id))))
    return [ChannelPolicy(
        default_zone=settings["timezone"],
        quiet=QuietHours.parse(settings["quiet_hours"].get(channel_type)),
        caps=tuple(Cap(c["messages"], c["window_hours"]) for c in settings["frequency_caps"].get(channel_type, [])),
        local_time=options.local_time if options else None,
        skip_passed=bool(options and options.passed_zones == "skip"),
        exempt=exempt,
    ) for channel_type in channel_types]


class Planner:
    """Plans for one ledger range: zones repeat, so each zone's plan is worked out once."""

    def __init__(self, policy: ChannelPolicy, now: datetime) -> None:
        self.policy, self.now = policy, now
        self._plans: dict[str, Plan] = {}

    def plan(self, zone: str) -> Plan:
        found = self._plans.get(zone)
        if found is None:
            found = self._plans[zone] = self.policy.plan(zone, self.now)
        return found


# --- At claim time --------------------------------------------------------------------------------

_DEFER = """
    UPDATE deliveries AS d SET status = 'queued', "notBefore" = w.until, "deferredBy" = 'quiet_hours',
                               "claimedAt" = NULL, "leaseExpiresAt" = NULL, "updatedAt" = now()
    FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS w(id uuid, until timestamp)
    WHERE d.id = w.id AND d.status = 'sending'
    """
# Serializes cap decisions per contact and channel type: whoever decides second sees the first's row.
_LOCK = "SELECT pg_advisory_xact_lock(k) FROM unnest(CAST(:keys AS bigint[])) AS k ORDER BY k"
_CAP = """
    WITH capped AS (
        SELECT d.id FROM deliveries AS d
        WHERE d.id = ANY(CAST(:ids AS uuid[])) AND d.status = 'sending' AND EXISTS (
            SELECT 1 FROM jsonb_to_recordset(CAST(:caps AS jsonb)) AS w(messages int, "windowHours" float8)
            WHERE w.messages <= (
                SELECT count(*) FROM deliveries AS x
                WHERE x."contactId" = d."contactId" AND x."channelType" = d."channelType" AND x.id <> d.id
                  AND x."claimedAt" > CAST(:now AS timestamp) - make_interval(secs => w."windowHours" * 3600)
                  AND x.status IN ('sending', 'sent', 'delivered', 'unknown')))
    )
    UPDATE deliveries AS d SET status = 'skipped', "skipReason" = 'frequency_capped', "leaseExpiresAt" = NULL,
                               "updatedAt" = now()
    FROM capped WHERE d.id = capped.id
    RETURNING d.id
    """
_NOTHING = "SELECT NULL::uuid WHERE false"  # the last statement's rows are the answer: none skipped


@dataclass(frozen=True)
class Claimed:
    """What admission needs of a claimed row."""

    id: uuid.UUID
    contact_id: uuid.UUID | None
    zone: str


def admit(policy: ChannelPolicy, channel_type: str, rows: Sequence[Claimed], now: datetime) -> set[uuid.UUID]:
    """Of rows just claimed (committed `sending`), the ids that may not go out now: those inside
    their recipient's quiet hours go back to the queue until the quiet hours end, and those over a
    frequency cap are skipped. One round trip that commits itself, before anything is sent: its
    statements go as one string, which PostgreSQL runs as one transaction (so the advisory locks
    hold until its end), each statement reading what was committed when it starts (so the cap
    count, run after the locks are taken, sees every earlier decision)."""
    statements: list[str] = []
    params: dict[str, Any] = {"now": now}
    held: set[uuid.UUID] = set()
    if policy.quiet is not None:
        ends: dict[str, datetime | None] = {}
        waits: dict[uuid.UUID, datetime] = {}
        for row in rows:
            if row.zone not in ends:
                ends[row.zone] = policy.quiet_end(now, ZoneInfo(row.zone))
            until = ends[row.zone]
            if until is not None:
                waits[row.id] = until
        if waits:
            statements.append(_DEFER)
            params["rows"] = bulk_sql.to_json([{"id": row_id, "until": until} for row_id, until in waits.items()])
            held |= set(waits)
    contacts = {row.id: row.contact_id for row in rows if row.id not in held and row.contact_id is not None}
    if policy.caps and not policy.exempt and contacts:
        statements += [_LOCK, _CAP]
        params["keys"] = sorted({_lock_key(contact_id, channel_type) for contact_id in contacts.values()})
        params["ids"] = [str(row_id) for row_id in contacts]
        params["caps"] = bulk_sql.to_json([{"messages": c.messages, "windowHours": c.window_hours}
                                           for c in policy.caps])
    if not statements:
        return held
    if statements[-1] != _CAP:
        statements.append(_NOTHING)
    capped = db.session.scalars(sa.text(";\n".join(statements)), params,
                                bind_arguments={"bind": autocommit_engine()}).all()
    return held | set(capped)


def _lock_key(contact_id: uuid.UUID, channel_type: str) -> int:
    digest = hashlib.blake2b(contact_id.bytes + channel_type.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)
