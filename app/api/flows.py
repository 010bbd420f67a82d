"""Triggered flows: CRUD, state changes, enrolments and stats (app.services.flows)."""
from __future__ import annotations

import uuid

from app.api.blueprint import ApiBlueprint, SelectPage
from app.schemas.flows import (
    EXAMPLE,
    EnrollmentQuerySchema,
    EnrollmentSchema,
    FlowCreateSchema,
    FlowQuerySchema,
    FlowSchema,
    FlowStatsSchema,
    FlowUpdateSchema,
)
from app.security.principal import current_user_id
from app.services import flows

blp = ApiBlueprint("flows", __name__, write_scope="campaigns:write", url_prefix="/api/v1/flows",
                   description="Triggered flows: messages that follow a contact's own events")

FLOW = "/<uuid:flow_id>"


@blp.route("", methods=["GET"])
@blp.authenticated
@blp.arguments(FlowQuerySchema, location="query")
@blp.response(200, FlowSchema(many=True))
@blp.paginate(SelectPage)
def list_flows(filters):
    """The merchant's flows, newest first."""
    return flows.flows_query(current_user_id(), **filters)


@blp.route("", methods=["POST"])
@blp.authenticated
@blp.arguments(FlowCreateSchema, example=EXAMPLE)
@blp.response(201, FlowSchema)
def create_flow(data):
    """Create a draft flow (422 naming the path of every bad part); activate it to start enrolling."""
    return flows.create(current_user_id(), data)


@blp.route(FLOW, methods=["GET"])
@blp.authenticated
@blp.response(200, FlowSchema)
def get_flow(flow_id: uuid.UUID):
    return flows.get_flow(current_user_id(), flow_id)


@blp.route(FLOW, methods=["PATCH"])
@blp.authenticated
@blp.arguments(FlowUpdateSchema)
@blp.response(200, FlowSchema)
def update_flow(changes, flow_id: uuid.UUID):
    """Change given parts: the name at any time, the rest of a draft (409 otherwise); `steps` is replaced whole."""
    return flows.update(current_user_id(), flow_id, changes)


@blp.route(FLOW, methods=["DELETE"])
@blp.authenticated
@blp.response(204)
def delete_flow(flow_id: uuid.UUID):
    """Delete a draft or completed flow with its enrolments and ledger (running or paused: 409, stop it first)."""
    flows.delete(current_user_id(), flow_id)


def _transition(name: str, summary: str):
    @blp.route(FLOW + f"/{name}", methods=["POST"], endpoint=name)
    @blp.authenticated
    @blp.response(200, FlowSchema)
    def move(flow_id: uuid.UUID):
        return getattr(flows, name)(current_user_id(), flow_id)
    move.__doc__ = summary


_transition("activate", "draft → running: events from now on enrol contacts (no backfill). 409 from any other state.")
_transition("pause", "running → paused: due steps wait. 409 from any other state.")
_transition("resume", "paused → running: the steps that fell due meanwhile go out, late, once. 409 otherwise.")
_transition("stop", "→ completed: nobody enters, active enrolments exit, queued messages are skipped. "
                    "409 when already completed.")


@blp.route(FLOW + "/enrollments", methods=["GET"])
@blp.authenticated
@blp.arguments(EnrollmentQuerySchema, location="query")
@blp.response(200, EnrollmentSchema(many=True))
@blp.paginate(SelectPage)
def list_enrollments(filters, flow_id: uuid.UUID):
    """The flow's enrolments, newest first: contact, status, exit reason, current step, next step due."""
    return flows.enrollments_query(current_user_id(), flow_id, **filters)


@blp.route(FLOW + "/stats", methods=["GET"])
@blp.authenticated
@blp.response(200, FlowStatsSchema)
def stats(flow_id: uuid.UUID):
    """Entered, active, completed and exited (by reason); per step the counters of a campaign channel."""
    return flows.stats(current_user_id(), flow_id)
