"""Triggered flows: contacts enter when an event happens, and each step's message goes out after its
delay, once per enrolment, through the campaign send engine.

A flow is backed by a campaign of its own (hidden from the campaign API) whose channels are the
flow's steps: consent and address checks, suppressions, send policies, rate limits, receipts,
tracking, unsubscribe links and counters all apply to a step's messages as to a campaign's.

- Enrolment (`enroll`) happens where events are processed, in the transaction that marks them
  processed: one enrolment per (flow, triggering event), since an event's activity row is written
  once, and, for `once`, per (flow, contact), by a unique key; `afterDays` under an advisory lock
  per (flow, contact), decided against every earlier enrolment. Triggers and exits are matched
  against the batch's own rows. Exit events end active enrolments in the same place; one that
  happened before its trigger was processed ends the enrolment at once.
- Due steps (`dispatch_due`) are claimed from the database by beat (SKIP LOCKED), their exits
  checked right before, and written to the ledger as queued rows in one transaction with the
  enrolment's move to its next step; the channel's senders then send them at the channel's rate.
"""
from __future__ import annotations

import itertools
import logging
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from marshmallow import ValidationError
from sqlalchemy.dialects.postgresql import distinct_on
from sqlalchemy.dialects.postgresql import insert as pg_insert

from app import clock
from app import task_names as tasks
from app.channels.catalogue import CHANNEL_TYPES
from app.channels.configs import load_channel_config
from app.errors import Conflict, Forbidden, NotFound, ValidationFailed
from app.extensions import db
from app.jobs import hint
from app.models import Campaign, CampaignChannel, ContactActivity, Delivery, Flow, FlowEnrollment, FlowStep, User
from app.models.flows import REENTRY_MODES
from app.services import audience_sql, bulk_sql, delivery_ledger, send_policies, senders, sending, webhook_events
from app.services.campaign_stats import ChannelStats, channel_stats
from app.services.prepared_statements import PreparedStatement
from app.services.transactions import transaction
from app.sources.normalize import NORMALIZED_TYPES

log = logging.getLogger(__name__)

MAX_STEPS = 20
MAX_EXITS = 10
MAX_DELAY_SECONDS = 365 * 86400
MAX_REENTRY_DAYS = 3650
NAME_MAX = 200
DISPATCH_BATCH = 1000
DISPATCH_TIME_BUDGET = 60.0  # seconds per task, well inside the soft time limit
DISPATCH_HINT_MS = 500
TOP_FIELDS = ("name", "trigger", "filter", "exitWhen", "reentry", "steps")
EVENT_FIELDS = ("event", "name", "where")

# Why an enrolment ended early (`exitReason`): an exit event (`event:<type>`), or one of these.
CONTACT_DELETED = "contact_deleted"
FLOW_STOPPED = "flow_stopped"


# --- Definitions --------------------------------------------------------------------------------

class _Check:
    """One walk over a flow definition, collecting every problem under its JSON path."""

    def __init__(self) -> None:
        self.errors: dict[str, list[str]] = {}

    def fail(self, path: str, message: str) -> None:
        self.errors.setdefault(path, []).append(message)

    def object(self, node: Any, path: str, allowed: tuple[str, ...], required: tuple[str, ...]) -> bool:
        if not isinstance(node, dict):
            self.fail(path, "Must be an object.")
            return False
        for key in node:
            if key not in allowed:
                self.fail(f"{path}.{key}" if path else key, audience_sql.UNKNOWN)
        for key in required:
            if key not in node:
                self.fail(f"{path}.{key}" if path else key, audience_sql.REQUIRED)
        return True

    def integer(self, value: Any, path: str, low: int, high: int) -> None:
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            self.fail(path, f"Must be a whole number from {low} to {high}.")

    def event(self, node: Any, path: str) -> None:
        """An event to match: its type, a custom event's name, and property filters (`where`, as in
        the audience grammar's event conditions)."""
        if not self.object(node, path, EVENT_FIELDS, ("event",)):
            return
        if "event" in node and node["event"] not in NORMALIZED_TYPES:
            self.fail(f"{path}.event", f"Must be one of: {', '.join(NORMALIZED_TYPES)}.")
        if "name" in node:
            if node.get("event") != "custom":
                self.fail(f"{path}.name", "Only custom events have a name to match.")
            elif problem := audience_sql.text_problem(node["name"]):
                self.fail(f"{path}.name", problem)
        if "where" in node:
            self.errors.update(audience_sql.where_problems(node["where"], f"{path}.where"))

    def definition(self, data: Mapping[str, Any], partial: bool) -> None:
        required = () if partial else ("name", "trigger", "steps")
        if not self.object(data, "", TOP_FIELDS, required):
            return
        if "name" in data and (problem := audience_sql.text_problem(data["name"], NAME_MAX)):
            self.fail("name", problem)
        if "trigger" in data:
            self.event(data["trigger"], "trigger")
        if data.get("filter") is not None:
            try:
                audience_sql.validate_definition(data["filter"])
            except ValidationFailed as exc:
                for key, messages in (exc.errors or {}).items():
                    self.errors.setdefault("filter" + key.removeprefix("definition"), []).extend(messages)
        if "exitWhen" in data:
            exits = data["exitWhen"]
            if not isinstance(exits, list) or len(exits) > MAX_EXITS:
                self.fail("exitWhen", f"Must be a list of at most {MAX_EXITS} events.")
            else:
                for index, node in enumerate(exits):
                    self.event(node, f"exitWhen[{index}]")
        if "reentry" in data:
            self.reentry(data["reentry"])
        if "steps" in data:
            self.steps(data["steps"])

    def reentry(self, node: Any) -> None:
        if not self.object(node, "reentry", ("mode", "days"), ("mode",)):
            return
        mode = node.get("mode")
        if "mode" in node and mode not in REENTRY_MODES:
            self.fail("reentry.mode", f"Must be one of: {', '.join(REENTRY_MODES)}.")
        if mode == "afterDays":
            if "days" not in node:
                self.fail("reentry.days", audience_sql.REQUIRED)
            else:
                self.integer(node["days"], "reentry.days", 1, MAX_REENTRY_DAYS)
        elif "days" in node:
            self.fail("reentry.days", "Only the afterDays mode takes days.")

    def steps(self, steps: Any) -> None:
        if not isinstance(steps, list) or not 1 <= len(steps) <= MAX_STEPS:
            self.fail("steps", f"Must be a list of 1 to {MAX_STEPS} steps.")
            return
        for index, step in enumerate(steps):
            path = f"steps[{index}]"
            if not self.object(step, path, ("delaySeconds", "channelType", "config", "frequencyCapExempt"),
                               ("delaySeconds", "channelType", "config")):
                continue
            if not isinstance(step.get("frequencyCapExempt", False), bool):
                self.fail(f"{path}.frequencyCapExempt", "Not a valid boolean.")
            if "delaySeconds" in step:
                self.integer(step["delaySeconds"], f"{path}.delaySeconds", 0, MAX_DELAY_SECONDS)
            channel_type = step.get("channelType")
            if "channelType" in step and channel_type not in CHANNEL_TYPES:
                self.fail(f"{path}.channelType", f"Must be one of: {', '.join(CHANNEL_TYPES)}.")
            elif "config" in step:
                self.config(step, path)

    def config(self, step: dict[str, Any], path: str) -> None:
        config = step["config"]
        if not isinstance(config, dict):
            self.fail(f"{path}.config", "Must be an object.")
            return
        if "abTest" in config:
            self.fail(f"{path}.config.abTest", "A/B tests are for campaigns; a flow step sends one message.")
            return
        try:
            step["config"] = load_channel_config(step["channelType"], config)
        except ValidationError as exc:
            for key, messages in _flattened(exc.messages, f"{path}.config"):
                self.errors.setdefault(key, []).extend(messages)


def _flattened(messages: Any, path: str) -> list[tuple[str, list[str]]]:
    if isinstance(messages, dict):
        return [item for key, inner in messages.items()
                for item in _flattened(inner, f"{path}[{key}]" if isinstance(key, int) else f"{path}.{key}")]
    return [(path, [str(m) for m in messages] if isinstance(messages, list) else [str(messages)])]


def _validated(data: Mapping[str, Any], partial: bool = False) -> dict[str, Any]:
    """The definition with each step's config completed, or ValidationFailed naming every bad path."""
    data = {**data, "steps": [dict(step) if isinstance(step, dict) else step for step in data["steps"]]} \
        if isinstance(data.get("steps"), list) else dict(data)
    check = _Check()
    check.definition(data, partial)
    if check.errors:
        raise ValidationFailed("The flow is not valid.", errors=check.errors)
    return data


# --- The API's operations -------------------------------------------------------------------------

def flows_query(user_id: uuid.UUID, status: str | None = None) -> sa.Select[Flow]:
    """The merchant's flows, newest first (for SelectPage)."""
    stmt = sa.select(Flow).where(Flow.user_id == user_id, Flow.deleted_at.is_(None))
    if status is not None:
        stmt = stmt.where(Flow.status == status)
    return stmt.order_by(Flow.created_at.desc(), Flow.id.desc())


def get_flow(user_id: uuid.UUID, flow_id: uuid.UUID, for_update: bool = False) -> Flow:
    """The merchant's flow; another merchant's answers exactly like a missing one (404)."""
    stmt = sa.select(Flow).where(Flow.id == flow_id, Flow.user_id == user_id, Flow.deleted_at.is_(None))
    flow = db.session.scalar(stmt.with_for_update() if for_update else stmt)
    if flow is None:
        raise NotFound("Flow not found.")
    return flow


def create(user_id: uuid.UUID, data: Mapping[str, Any]) -> Flow:
    """A new draft flow, with its backing campaign and a channel per step."""
    with transaction():
        definition = _validated(data)
        campaign = Campaign(user_id=user_id, name=definition["name"], status="draft", config={})
        db.session.add(campaign)
        db.session.flush()
        flow = Flow(user_id=user_id, campaign_id=campaign.id, name=definition["name"], status="draft",
                    trigger=definition["trigger"], filter=definition.get("filter"),
                    exit_when=definition.get("exitWhen", []), reentry=definition.get("reentry", {"mode": "once"}))
        db.session.add(flow)
        db.session.flush()
        _write_steps(flow, definition["steps"])
    return flow


def update(user_id: uuid.UUID, flow_id: uuid.UUID, changes: Mapping[str, Any]) -> Flow:
    """Change a flow: its name at any time, the rest while it is a draft (409 otherwise)."""
    with transaction():
        flow = get_flow(user_id, flow_id, for_update=True)
        definition = _validated(changes, partial=True)
        if set(definition) - {"name"} and flow.status != "draft":
            raise Conflict(f"A {flow.status} flow's definition cannot be changed; only its name can.")
        if "name" in definition:
            flow.name = definition["name"]
            db.session.execute(sa.update(Campaign).where(Campaign.id == flow.campaign_id)
                               .values(name=definition["name"]))
        for key, attribute in (("trigger", "trigger"), ("filter", "filter"), ("exitWhen", "exit_when"),
                               ("reentry", "reentry")):
            if key in definition:
                setattr(flow, attribute, definition[key] if key != "exitWhen" or definition[key] else [])
        if "steps" in definition:
            db.session.execute(sa.delete(CampaignChannel).where(CampaignChannel.campaign_id == flow.campaign_id))
            db.session.expire(flow, ["steps"])
            _write_steps(flow, definition["steps"])
        flow.updated_at = clock.now()
    db.session.refresh(flow)
    return flow


def _write_steps(flow: Flow, steps: list[dict[str, Any]]) -> None:
    for position, step in enumerate(steps):
        channel = CampaignChannel(campaign_id=flow.campaign_id, channel_type=step["channelType"], status="pending",
                                  config=step["config"])
        db.session.add(channel)
        db.session.flush()
        db.session.add(FlowStep(flow_id=flow.id, position=position, delay_seconds=step["delaySeconds"],
                                channel_id=channel.id, frequency_cap_exempt=step.get("frequencyCapExempt", False)))
    db.session.flush()


def delete(user_id: uuid.UUID, flow_id: uuid.UUID) -> None:
    """Delete a flow that is not running or paused (stop it first: 409). One that never handed a
    message over is removed with its enrolments and ledger; one that did is only hidden, as a
    deleted campaign is: its ledger backs the unsubscribe and tracking links people already have."""
    with transaction():
        flow = get_flow(user_id, flow_id, for_update=True)
        if flow.status in ("running", "paused"):
            raise Conflict(f"A {flow.status} flow cannot be deleted; stop it first.")
        handed_over = sa.select(Delivery.id).where(Delivery.campaign_id == flow.campaign_id,
                                                   Delivery.status.in_(("sent", "delivered", "unknown"))).exists()
        if db.session.scalar(sa.select(handed_over)):
            flow.deleted_at = clock.now()
        else:
            db.session.execute(sa.delete(Campaign).where(Campaign.id == flow.campaign_id))


def activate(user_id: uuid.UUID, flow_id: uuid.UUID) -> Flow:
    """draft → running: events that happen from now on enrol contacts (no backfill)."""
    with transaction():
        flow = get_flow(user_id, flow_id, for_update=True)
        if not db.session.scalar(sa.select(User.is_verified).where(User.id == user_id)):
            raise Forbidden("Verify your email address before sending flows.")
        # Email steps send only from the merchant's verified senders (422 naming each step's address).
        senders.require_verified(user_id, [
            senders.SendingChannel(("steps", step.position), step.channel.channel_type, step.channel.config)
            for step in flow.steps])
        now = clock.now()
        _move(flow, ("draft",), "running", activated_at=now)
        _backing_campaign(flow, "running", started_at=now)
        db.session.execute(sa.update(CampaignChannel).where(CampaignChannel.campaign_id == flow.campaign_id)
                           .values(status="sending", updated_at=sa.func.now()))
    return flow


def pause(user_id: uuid.UUID, flow_id: uuid.UUID) -> Flow:
    """running → paused: steps that fall due wait, and so do messages queued but not yet sent."""
    with transaction():
        flow = get_flow(user_id, flow_id, for_update=True)
        _move(flow, ("running",), "paused")
        _backing_campaign(flow, "paused")
    return flow


def resume(user_id: uuid.UUID, flow_id: uuid.UUID) -> Flow:
    """paused → running: the steps that fell due meanwhile go out now, late, once each."""
    with transaction():
        flow = get_flow(user_id, flow_id, for_update=True)
        _move(flow, ("paused",), "running")
        _backing_campaign(flow, "running")
        for channel_id, queued in delivery_ledger.queued_by_channel(flow.campaign_id):
            if queued:
                sending.start_senders(channel_id, queued)
        _hint_dispatch()
    return flow


def stop(user_id: uuid.UUID, flow_id: uuid.UUID) -> Flow:
    """→ completed: nobody enters any more, active enrolments exit, queued messages are skipped."""
    with transaction():
        flow = get_flow(user_id, flow_id, for_update=True)
        _move(flow, ("draft", "running", "paused"), "completed", stopped_at=clock.now())
        db.session.execute(
            sa.update(FlowEnrollment).where(FlowEnrollment.flow_id == flow.id, FlowEnrollment.status == "active")
            .values(status="exited", exit_reason=FLOW_STOPPED, next_due_at=None, ended_at=sa.func.now(),
                    updated_at=sa.func.now()))
        delivery_ledger.skip_queued(flow.campaign_id, FLOW_STOPPED)
        db.session.execute(sa.update(CampaignChannel).where(CampaignChannel.campaign_id == flow.campaign_id,
                                                            CampaignChannel.status.in_(("pending", "sending")))
                           .values(status="sent", updated_at=sa.func.now()))
        _backing_campaign(flow, "completed", ended_at=sa.func.now())
    return flow


def _backing_campaign(flow: Flow, status: str, **values: Any) -> None:
    """The flow's campaign follows the flow: its claims run only while it is `running`."""
    db.session.execute(sa.update(Campaign).where(Campaign.id == flow.campaign_id)
                       .values(status=status, updated_at=sa.func.now(), **values))


def _move(flow: Flow, allowed: tuple[str, ...], status: str, **values: Any) -> None:
    """The flow's row is locked: its status decides, and nobody else moves it meanwhile."""
    if flow.status not in allowed:
        raise Conflict(f"A {flow.status} flow cannot become {status}.")
    flow.status = status
    flow.updated_at = clock.now()
    for name, value in values.items():
        setattr(flow, name, value)


def enrollments_query(user_id: uuid.UUID, flow_id: uuid.UUID, status: str | None = None) -> sa.Select[Any]:
    """The flow's enrolments, newest first (for SelectPage)."""
    get_flow(user_id, flow_id)
    stmt = sa.select(FlowEnrollment).where(FlowEnrollment.flow_id == flow_id)
    if status is not None:
        stmt = stmt.where(FlowEnrollment.status == status)
    return stmt.order_by(FlowEnrollment.created_at.desc(), FlowEnrollment.id.desc())


@dataclass(frozen=True)
class StepStats:
    position: int
    delay_seconds: int
    channel: ChannelStats


@dataclass(frozen=True)
class FlowStats:
    flow_id: uuid.UUID
    status: str
    entered: int
    active: int
    completed: int
    exited: int
    exit_reasons: dict[str, int]
    steps: list[StepStats]


def stats(user_id: uuid.UUID, flow_id: uuid.UUID) -> FlowStats:
    """Enrolments by status and exit reason, and each step's counters as a campaign channel's."""
    flow = get_flow(user_id, flow_id)
    counts: dict[str, int] = defaultdict(int)
    reasons: dict[str, int] = {}
    for status, reason, count in db.session.execute(
            sa.select(FlowEnrollment.status, FlowEnrollment.exit_reason, sa.func.count())
            .where(FlowEnrollment.flow_id == flow.id).group_by(FlowEnrollment.status, FlowEnrollment.exit_reason)):
        counts[status] += count
        if status == "exited":
            reasons[reason or "unknown"] = count
    by_channel = {channel.channel_id: channel for channel in channel_stats(flow.campaign_id)}
    return FlowStats(
        flow_id=flow.id, status=flow.status, entered=sum(counts.values()), active=counts["active"],
        completed=counts["completed"], exited=counts["exited"], exit_reasons=reasons,
        steps=[StepStats(step.position, step.delay_seconds, by_channel[step.channel_id]) for step in flow.steps])


# --- Enrolment, where events are processed ----------------------------------------------------------

@dataclass(frozen=True)
class _Running:
    """A running flow as enrolment reads it for every batch: a few columns, no ORM object.
    `announces`: its merchant has an endpoint subscribed to `flow.enrolled`."""

    id: uuid.UUID
    user_id: uuid.UUID
    trigger: dict[str, Any]
    filter: dict[str, Any] | None
    exit_when: list[dict[str, Any]]
    reentry: dict[str, Any]
    activated_at: datetime
    announces: bool

    @property
    def version(self) -> tuple[uuid.UUID, datetime]:
        """What the flow's statements depend on: its definition, frozen from activation on (`update`
        refuses to change it), and the time it ran from. Pausing and resuming change neither."""
        return self.id, self.activated_at


# The running flows of the batch's merchants, read `FOR KEY SHARE` (in id order), as a foreign key
# would check each enrolment's flow: a flow can't be paused, stopped or deleted while a batch enrols
# in it, and a batch that waited for one of those reads the flow's new status. Then, before the
# statement that enrols, each (`afterDays` flow, contact) the batch may enter is locked: `afterDays`
# compares an entry with the contact's earlier ones, so two batches of the same contact take turns,
# while batches of other contacts never wait on each other. The locks are PostgreSQL's two-integer
# advisory locks, which nothing else takes, on the int4 hashes of the flow's and the contact's ids
# (two pairs that share them only wait for each other), taken in one sorted pass: no deadlock.
_RUNNING = PreparedStatement("herald_flows_running", sa.text(
    f"""
    WITH running AS MATERIALIZED (
        SELECT f.id, f."userId", f.trigger, f.filter, f."exitWhen", f.reentry, f."activatedAt",
               {webhook_events.subscribed('f."userId"', "'flow.enrolled'")} AS announces
        FROM flows AS f
        WHERE f.status = 'running' AND f."userId" = ANY(CAST(:merchants AS uuid[]))
        ORDER BY f.id
        FOR KEY SHARE OF f
    ), written AS MATERIALIZED (
        -- The batch's rows, read once by their row ids: joined with the flows instead, they were
        -- read again for each `afterDays` flow, and a small table by a sequential scan.
        SELECT a."userId", a."eventType", a."contactId" FROM contact_activities AS a
        WHERE a.ctid = ANY(CAST(:written AS tid[]))
    ), locked AS MATERIALIZED (
        SELECT pg_advisory_xact_lock(k.flow, k.contact)
        FROM (SELECT DISTINCT uuid_hash(r.id) AS flow, uuid_hash(a."contactId") AS contact
              FROM running AS r
              JOIN written AS a ON a."userId" = r."userId" AND a."eventType" = r.trigger ->> 'event'
              WHERE r.reentry ->> 'mode' = 'afterDays') AS k
        ORDER BY k.flow, k.contact
    )
    -- A one-time filter: the locks are all taken before the first flow is returned.
    SELECT r.* FROM running AS r WHERE (SELECT count(*) FROM locked) >= 0 ORDER BY r.id
    """
))


def enroll(located: Mapping[tuple[uuid.UUID, str], str]) -> None:
    """Enrol the contacts of the batch's triggering events in the merchants' running flows, and end
    the enrolments their exit events end. `located`: the contact_activities rows the caller's
    transaction wrote for the batch, where it wrote them, by merchant and event type
    (bulk_sql.insert_located's `tid[]` literals), unchanged since. Each event's row is unique and
    written once, so each event enrols once, however often a batch is retried; no commit."""
    types: dict[uuid.UUID, set[str]] = defaultdict(set)
    for user_id, event_type in located:
        types[user_id].add(event_type)
    if not types:
        return
    entering, exiting = [], []
    running = _RUNNING.execute_in(db.session, db.engine, {"merchants": bulk_sql.array_literal(types),
                                                          "written": bulk_sql.concatenated(located.values())})
    for flow in (_Running(*row) for row in running):
        seen = types[flow.user_id]
        if flow.trigger["event"] in seen:
            entering.append(flow)
        if any(node["event"] in seen for node in flow.exit_when):
            exiting.append(flow)
    if not entering and not exiting:
        return
    now = clock.now()
    read = _event_types(entering, exiting)
    params: dict[str, Any] = {
        f"batch_{n}": bulk_sql.concatenated(tids for (_, of_type), tids in located.items() if of_type == event_type)
        for n, event_type in enumerate(read)}
    params.update(now=now, announcing=[flow.id for flow in entering if flow.announces])
    after_days = [flow for flow in entering if flow.reentry["mode"] == "afterDays"]  # locked by _RUNNING
    together = [flow for flow in entering if flow.reentry["mode"] != "afterDays"]
    due, announced = _write(together, after_days, exiting, read, params)
    webhook_events.flow_enrolled(announced)
    if due:
        _hint_dispatch()


# The batch's activity rows, read back where they were written (a `tid[]` literal per event type the
# flows trigger or exit on, `batch_<n>`: a TID scan, a tenth of the cost of probing the events' ids
# in their index): triggers and exits are matched against them, so a batch costs its own size
# whatever the merchant's history (and PostgreSQL parses no second JSON document of the batch),
# and each flow reads only the rows of its own events.
_ACTIVITIES = ContactActivity.__table__


class _Tid(sa.types.UserDefinedType[str]):
    """PostgreSQL's `tid`, a row's physical id (`ctid`)."""

    cache_ok = True

    def get_col_spec(self, **kw: Any) -> str:
        return "tid"


_CTID: sa.ColumnClause[str] = sa.literal_column(f"{_ACTIVITIES.name}.ctid", _Tid())


@dataclass(frozen=True)
class _Rows:
    """Columns named as ContactActivity's attributes, for the criteria shared with it."""

    id: Any
    data_event_id: Any
    user_id: Any
    contact_id: Any
    event_type: Any
    original_name: Any
    occurred_at: Any
    properties: Any

    @classmethod
    def of(cls, c: Any) -> _Rows:
        """The columns `c` of contact_activities (an alias's, a CTE's of its rows)."""
        return cls(c.id, c.dataEventId, c.userId, c.contactId, c.eventType, c.originalName, c.occurredAt, c.properties)


def _event_types(entering: list[_Running], exiting: list[_Running]) -> list[str]:
    """The event types the flows' statement reads the batch's rows of, in the order of its `batch_<n>`."""
    return sorted({flow.trigger["event"] for flow in entering}
                  | {node["event"] for flow in exiting for node in flow.exit_when})


def _batches(types: list[str]) -> dict[str, tuple[sa.CTE, _Rows]]:
    """For each event type (`_event_types`), a CTE of the batch's rows of that type. Materialized:
    one that a single flow reads would otherwise be folded into that flow's query, whose planner may
    then prefer the merchant's events of the type since the flow's activation (an index range that
    stale statistics can put at one row) filtered by the batch's row ids: the merchant's history
    read for every batch."""
    batches = {}
    for n, event_type in enumerate(types):
        located = sa.cast(sa.bindparam(f"batch_{n}", type_=sa.Text), sa.ARRAY(_Tid()))
        cte = sa.select(_ACTIVITIES).where(_CTID == sa.any_(located)).cte(f"batch_{n}").prefix_with("MATERIALIZED")
        batches[event_type] = (cte, _Rows.of(cte.c))
    return batches


def _matching(node: Mapping[str, Any], activity: Any = ContactActivity) -> list[sa.ColumnElement[bool]]:
    """What an activity must be to match an event node (trigger or exit)."""
    criteria = [activity.event_type == node["event"]]
    if "name" in node:
        criteria.append(activity.original_name == node["name"])
    return criteria + audience_sql.where_criteria(activity.properties, node.get("where", {}))


def _exit_criteria(nodes: Sequence[Mapping[str, Any]], activity: Any = ContactActivity) -> sa.ColumnElement[bool]:
    """What an activity must be to match one of the exit `nodes` (a flow's `exitWhen`, or some of them)."""
    return sa.or_(*(sa.and_(*_matching(node, activity)) for node in nodes))


# Statements built from flows' definitions, kept by the flows (and versions) they serve and
# prepared on each connection that runs them, the definitions' values written into them: batch
# after batch of the same flows neither builds them again nor has PostgreSQL parse and plan them
# again, and each batch sends only its own values. The oldest are released when too many.
_STATEMENTS: dict[tuple[Any, ...], PreparedStatement] = {}
STATEMENTS_KEPT = 256
_NAMES = itertools.count()


def _execute(key: tuple[Any, ...], build: Any, params: dict[str, Any]) -> Any:
    """Run the kept statement for `key` (built by `build` the first time) on the session's connection."""
    kept = _STATEMENTS.get(key)
    if kept is None:
        if len(_STATEMENTS) >= STATEMENTS_KEPT:
            released = _STATEMENTS.pop(next(iter(_STATEMENTS)))
            released.release()
        kept = _STATEMENTS[key] = PreparedStatement(f"herald_flows_{next(_NAMES)}", build(), inline_constants=True)
    return kept.execute_in(db.session, db.engine, params)


def _first_delays(flows: list[_Running]) -> dict[uuid.UUID, int]:
    """Each flow's first step delay (read when a flow's statements are built, not per batch)."""
    return dict(db.session.execute(sa.select(FlowStep.flow_id, FlowStep.delay_seconds).where(
        FlowStep.flow_id.in_([flow.id for flow in flows]), FlowStep.position == 0)).all())


_ENROLLMENTS = FlowEnrollment.__table__
_ENTRY_COLUMNS = ["id", "flowId", "contactId", "dataEventId", "triggeredAt", "status", "exitReason", "step",
                  "nextDueAt", "endedAt", "onceKey"]
_PLACES = 1 << 16  # a merchant's flows one statement can enrol in (_entry_id)


def _entry_id(activity_id: Any, place: Any) -> sa.ColumnElement[uuid.UUID]:
    """SQL: an enrolment's id, its triggering activity row's with the last two bytes set to the
    flow's `place` among the merchant's flows the statement enrols in (_places). The row's id is
    time-ordered (made when its event was processed) and unique, and the row enters flows in this
    statement only (the batch that wrote it), each at a place of its own: the ids are unique, and
    the primary key grows at its end, where an insert needs no search, instead of at a random leaf.
    No random number per row (gen_random_uuid() costs about 0.75 µs a row); 58 of the 74 bits
    after the row id's timestamp remain its own."""
    return sa.cast(sa.func.encode(sa.func.set_byte(sa.func.set_byte(
        sa.func.uuid_send(activity_id), 14, place // 256), 15, place % 256), "hex"), sa.Uuid)


def _places(flows: list[_Running]) -> dict[uuid.UUID, int]:
    """Each flow's place among its merchant's `flows` (an activity row is one merchant's)."""
    places, taken = {}, Counter[uuid.UUID]()
    for flow in flows:
        places[flow.id] = taken[flow.user_id]
        taken[flow.user_id] += 1
    if taken and max(taken.values()) > _PLACES:
        raise RuntimeError(f"a batch can enter at most {_PLACES} flows of a merchant at once")
    return places


def _write(together: list[_Running], after_days: list[_Running], exiting: list[_Running], read: list[str],
           params: dict[str, Any]) -> tuple[bool, list[uuid.UUID]]:
    """One statement for the batch's writes: end the enrolments the batch's exit events end, and
    enrol the contacts of the triggering events (`afterDays` ones under the locks _RUNNING took).
    Whether a first step is due already (`now`), and the enrolments of the flows `announcing` them.
    `read`: the event types whose rows the `batch_<n>` parameters name (`_event_types`)."""
    def build() -> Any:
        batches = _batches(read)
        rows = {event_type: of_type for event_type, (_, of_type) in batches.items()}
        batch_ctes = [cte for cte, _ in batches.values()]
        exits = _exits(exiting, rows)
        delays = _first_delays([*together, *after_days])
        places = _places([*together, *after_days])
        entries = [(flow.reentry["mode"], _entries(flow, _candidates(flow, rows[flow.trigger["event"]]),
                                                   delays[flow.id], places[flow.id]))
                   for flow in together]
        once = [branch for mode, branch in entries if mode == "once"]
        others = [branch for mode, branch in entries if mode != "once"]
        if after_days:
            others.append(_after_days(after_days, rows, delays, places))
        if not once and not others:
            return exits.add_cte(*batch_ctes)
        # No ON CONFLICT (speculative insertion costs a third more) but for `once` entries, whose
        # contact a concurrent batch may enter first: their key decides.
        inserts = [pg_insert(_ENROLLMENTS).from_select(_ENTRY_COLUMNS, sa.union_all(*branches))
                   for branches in (once, others) if branches]
        if once:
            inserts[0] = inserts[0].on_conflict_do_nothing(index_elements=["flowId", "onceKey"],
                                                           index_where=_ENROLLMENTS.c.onceKey.is_not(None))
        entered_ctes = [insert.returning(_ENROLLMENTS.c.id, _ENROLLMENTS.c.flowId, _ENROLLMENTS.c.nextDueAt)
                        .cte(f"entered_{n}") for n, insert in enumerate(inserts)]
        entered = sa.union_all(*(sa.select(*cte.c) for cte in entered_ctes)).subquery("entered")
        ctes = [*batch_ctes, *entered_ctes]
        if exits is not None:  # it sees only the enrolments of earlier batches, not these entries
            ctes.append(exits.returning(_ENROLLMENTS.c.id).cte("exited"))
        announcing = sa.bindparam("announcing", type_=sa.ARRAY(sa.Uuid))
        return sa.select(
            sa.func.coalesce(sa.func.bool_or(entered.c.nextDueAt <= sa.bindparam("now", type_=sa.DateTime)),
                             False).label("due"),
            sa.func.array_agg(entered.c.id).filter(entered.c.flowId == sa.func.any(announcing)).label("announced"),
        ).add_cte(*ctes)

    key = ("write", *(tuple(flow.version for flow in flows) for flows in (together, after_days, exiting)))
    result = _execute(key, build, params)
    if not together and not after_days:
        return False, []
    due, announced = result.one()
    return due, announced or []


def _exits(flows: list[_Running], rows: Mapping[str, _Rows]) -> Any:
    """End the active enrolments whose contact did one of their flow's exit events (among the
    batch's `rows` of each event type) since their trigger; None without such flows."""
    if not flows:
        return None
    branches = []
    for flow in flows:
        by_type: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for node in flow.exit_when:
            by_type[node["event"]].append(node)
        for event_type, nodes in by_type.items():
            of_type = rows[event_type]
            branches.append(
                sa.select(sa.literal(flow.id, sa.Uuid).label("flow"), of_type.contact_id.label("contactId"),
                          of_type.occurred_at.label("occurredAt"), of_type.event_type.label("eventType"))
                .where(of_type.user_id == flow.user_id, _exit_criteria(nodes, of_type)))
    found = sa.union_all(*branches).subquery()
    enrolment = _ENROLLMENTS.c
    return (sa.update(_ENROLLMENTS)
            .where(enrolment.flowId == found.c.flow, enrolment.status == "active",
                   enrolment.contactId == found.c.contactId, enrolment.triggeredAt <= found.c.occurredAt)
            .values(status="exited", exitReason="event:" + found.c.eventType, nextDueAt=None,
                    endedAt=sa.func.now(), updatedAt=sa.func.now()))


def _candidates(flow: _Running, activity: _Rows) -> sa.Select[Any]:
    """The flow's triggering events among the batch's rows, each with the first exit event since it
    (an exit may be processed before its trigger: events arrive out of order, and it ends the
    enrolment at once); for `once`, a contact's first of them, if they never entered before; for
    `afterDays`, those `days` or more after the contact's last entry (_after_days decides the rest)."""
    later = _Rows.of(_ACTIVITIES.alias("later").c)
    # By the contact alone (a contact is one merchant's): the merchant's own would let the planner
    # scan all of its events of a type since then for each candidate.
    exited_by = sa.cast(sa.null(), sa.Text) if not flow.exit_when else sa.select(later.event_type).where(
        later.contact_id == activity.contact_id, later.occurred_at >= activity.occurred_at,
        _exit_criteria(flow.exit_when, later),
    ).order_by(later.occurred_at).limit(1).scalar_subquery()
    earlier = _ENROLLMENTS.alias("earlier").c
    entered = sa.select(sa.func.max(earlier.triggeredAt)).where(
        earlier.flowId == flow.id, earlier.contactId == activity.contact_id).scalar_subquery()
    mode = flow.reentry["mode"]
    columns = [activity.id.label("activity_id"), activity.data_event_id.label("data_event_id"),
               activity.contact_id.label("contact_id"), activity.occurred_at.label("occurred_at"), exited_by.label("exit")]
    query = sa.select(*columns).where(
        activity.user_id == flow.user_id, *_matching(flow.trigger, activity),
        activity.occurred_at >= flow.activated_at)
    if flow.filter is not None:
        query = query.where(activity.contact_id.in_(audience_sql.compile_definition(flow.user_id, flow.filter)))
    if mode == "once":
        # NOT EXISTS, an anti-join, rather than the last entry's time: one index probe per candidate
        # without a subplan's aggregate to run for each.
        never = ~sa.exists().where(earlier.flowId == flow.id, earlier.contactId == activity.contact_id)
        return query.where(never).ext(distinct_on(activity.contact_id)).order_by(
            activity.contact_id, activity.occurred_at, activity.data_event_id)
    if mode == "afterDays":  # not within `days` of the last entry: the rest is decided in order (_after_days)
        days = sa.text(f"interval '{int(flow.reentry['days'])} days'")
        # Never entered (NULL) or long enough ago: one lookup of the last entry, not two.
        return query.where(sa.func.coalesce(activity.occurred_at >= entered + days, sa.true()))
    return query


def _entries(flow: _Running, candidates: sa.Select[Any], delay_seconds: int, place: int) -> sa.Select[Any]:
    """The enrolment rows (_ENTRY_COLUMNS) of a `once` or `always` flow's candidates (`now` bound)."""
    found = candidates.subquery()
    once_key = found.c.contact_id if flow.reentry["mode"] == "once" else sa.cast(sa.null(), sa.Uuid)
    return _entry_rows(found, sa.literal(flow.id, sa.Uuid), sa.text(f"interval '{int(delay_seconds)} seconds'"),
                       once_key, sa.literal(place))


def _entry_rows(found: Any, flow_id: Any, delay: Any, once_key: Any, place: Any) -> sa.Select[Any]:
    """_ENTRY_COLUMNS of candidates `found` (their columns as _candidates names them), entering the
    flow at `place` (_entry_id)."""
    exited = found.c.exit.is_not(None)
    return sa.select(
        _entry_id(found.c.activity_id, place), flow_id, found.c.contact_id, found.c.data_event_id,
        found.c.occurred_at,
        sa.case((exited, "exited"), else_="active"),
        sa.case((exited, sa.literal("event:") + found.c.exit), else_=None), sa.literal(0),
        sa.case((exited, None), else_=found.c.occurred_at + delay),
        sa.case((exited, sa.bindparam("now", type_=sa.DateTime)), else_=None),
        # Typed: a NULL first in the UNION would make the column text and the `once` flows after it fail.
        once_key)


def _after_days(flows: list[_Running], rows: Mapping[str, _Rows], delays: dict[uuid.UUID, int],
                places: dict[uuid.UUID, int]) -> sa.Select[Any]:
    """The enrolment rows of the `afterDays` flows: of a contact's candidates in order, the first
    enters (it is `days` past the last entry already), then each one `days` past the one before
    that entered (a recursive chain: a batch may span weeks)."""
    found = sa.union_all(*(_candidates(flow, rows[flow.trigger["event"]]).add_columns(
        sa.literal(flow.id, sa.Uuid).label("flow"), sa.literal(int(delays[flow.id])).label("delay"),
        sa.literal(int(flow.reentry["days"])).label("days"), sa.literal(places[flow.id]).label("place"))
        for flow in flows)).subquery()
    candidate = sa.select(found, sa.func.row_number().over(
        partition_by=(found.c.flow, found.c.contact_id), order_by=(found.c.occurred_at, found.c.data_event_id),
    ).label("n")).cte("candidate")
    c = candidate.c
    chain = sa.select(c.flow, c.contact_id, c.n, c.occurred_at, c.days).where(c.n == 1).cte("chain", recursive=True)
    later = candidate.alias("later")
    following = (sa.select(later.c.flow, later.c.contact_id, later.c.n, later.c.occurred_at, later.c.days)
                 .where(later.c.flow == chain.c.flow, later.c.contact_id == chain.c.contact_id,
                        later.c.n > chain.c.n,
                        later.c.occurred_at >= chain.c.occurred_at + sa.func.make_interval(0, 0, 0, chain.c.days))
                 .order_by(later.c.n).limit(1).lateral("following"))
    chain = chain.union_all(sa.select(*following.c).select_from(chain.join(following, sa.true())))
    return _entry_rows(candidate, c.flow, sa.func.make_interval(0, 0, 0, 0, 0, 0, c.delay),
                       sa.cast(sa.null(), sa.Uuid), c.place).select_from(
        candidate.join(chain, sa.and_(chain.c.flow == c.flow, chain.c.contact_id == c.contact_id, chain.c.n == c.n)))


def _hint_dispatch() -> None:
    """Ask a worker to dispatch due steps soon (debounced); beat does it anyway."""
    hint(tasks.DISPATCH_FLOW_STEPS, DISPATCH_HINT_MS)


# --- Dispatch of due steps, by beat ---------------------------------------------------------------

_CLAIM_DUE = sa.text(
    """
    SELECT e.id, e."flowId", e."contactId", e.step, e."nextDueAt", e."triggeredAt"
    FROM flow_enrollments AS e
    WHERE e.status = 'active' AND e."nextDueAt" <= CAST(:now AS timestamp)
      AND EXISTS (SELECT 1 FROM flows AS f WHERE f.id = e."flowId" AND f.status = 'running')
    ORDER BY e."nextDueAt"
    LIMIT :limit
    FOR UPDATE OF e SKIP LOCKED
    """
)

_ADVANCE = sa.text(
    """
    UPDATE flow_enrollments AS e SET
        step = m.step, "nextDueAt" = m.due, status = m.status, "exitReason" = m.reason,
        "endedAt" = CASE WHEN m.status = 'active' THEN NULL ELSE now() END, "updatedAt" = now()
    FROM jsonb_to_recordset(CAST(:moves AS jsonb)) AS m(id uuid, step smallint, due timestamp, status text, reason text)
    WHERE e.id = m.id
    """
)


def dispatch_due(limit: int = DISPATCH_BATCH) -> int:
    """Write the due steps of up to `limit` enrolments to the ledger (or end the enrolments whose
    exit came first), each enrolment moved on in the same transaction, and start the senders of the
    channels that got rows. Returns the enrolments handled; beat calls it again while it is busy."""
    with transaction():
        now = clock.now()
        claimed = list(db.session.execute(_CLAIM_DUE, {"now": now, "limit": limit}).all())
        if not claimed:
            return 0
        flows = {flow.id: flow for flow in db.session.scalars(
            sa.select(Flow).where(Flow.id.in_({row.flowId for row in claimed})))}
        exited = _exits_before_step(flows, claimed)
        moves, groups = [], defaultdict(list)
        for row in claimed:
            flow = flows[row.flowId]
            if row.contactId is None or row.id in exited:
                reason = CONTACT_DELETED if row.contactId is None else exited[row.id]
                moves.append({"id": row.id, "step": row.step, "due": None, "status": "exited", "reason": reason})
                continue
            groups[(flow.id, row.step)].append((row.id, row.contactId))
            following = row.step + 1
            if following < len(flow.steps):
                due = row.nextDueAt + timedelta(seconds=flow.steps[following].delay_seconds)
                moves.append({"id": row.id, "step": following, "due": due, "status": "active", "reason": None})
            else:
                moves.append({"id": row.id, "step": following, "due": None, "status": "completed", "reason": None})
        for (flow_id, position), members in groups.items():
            flow = flows[flow_id]
            channel = flow.steps[position].channel
            (policy,) = send_policies.channel_policies(flow.user_id, flow.campaign_id, [channel.channel_type])
            written = delivery_ledger.write_enrolled(flow.user_id, flow.campaign_id, channel.id,
                                                     channel.channel_type, members, policy, now)
            if written:
                sending.start_senders(channel.id, written)
        db.session.execute(_ADVANCE, {"moves": bulk_sql.to_json(moves)})
    return len(claimed)


def dispatch_all_due(time_budget: float = DISPATCH_TIME_BUDGET) -> int:
    """Dispatch due steps batch after batch until none is due or the time budget is spent (then
    another worker is asked to carry on). Returns the enrolments handled."""
    deadline, handled = time.monotonic() + time_budget, 0
    while (done := dispatch_due()) == DISPATCH_BATCH:
        handled += done
        if time.monotonic() >= deadline:
            _hint_dispatch()
            break
    return handled + done


def _exits_before_step(flows: dict[uuid.UUID, Flow], claimed: list[Any]) -> dict[uuid.UUID, str]:
    """Enrolments whose contact did an exit event since their trigger (`event:<type>`), checked
    right before the step is written."""
    exited: dict[uuid.UUID, str] = {}
    for flow in flows.values():
        mine = [row for row in claimed if row.flowId == flow.id and row.contactId is not None]
        if not flow.exit_when or not mine:
            continue
        pairs = sa.values(sa.column("enrollment", sa.Uuid), sa.column("contact", sa.Uuid),
                          sa.column("since", sa.DateTime), name="due").data(
            [(row.id, row.contactId, row.triggeredAt) for row in mine])
        for enrollment_id, event_type in db.session.execute(
                sa.select(pairs.c.enrollment, sa.func.min(ContactActivity.event_type))
                .join(ContactActivity, sa.and_(ContactActivity.contact_id == pairs.c.contact,
                                               ContactActivity.occurred_at >= pairs.c.since))
                .where(_exit_criteria(flow.exit_when))
                .group_by(pairs.c.enrollment)):
            exited[enrollment_id] = "event:" + event_type
    return exited

