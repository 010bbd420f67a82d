"""Contacts: the merchant's customers."""
from __future__ import annotations

import uuid

from flask import request

from app.api.blueprint import ApiBlueprint, SelectPage
from app.schemas.contacts import (
    ContactCreateSchema,
    ContactQuerySchema,
    ContactSchema,
    ContactUpdateSchema,
    ImportResultSchema,
    UnsubscribeSchema,
    read_import_body,
)
from app.schemas.privacy import ConsentChangeSchema, ContactExportSchema
from app.security.principal import current_user_id
from app.services import contact_import, contacts, privacy

blp = ApiBlueprint("contacts", __name__, write_scope="contacts:write", url_prefix="/api/v1/contacts",
                   description="The merchant's contacts")

IMPORT_BODY = {
    "required": True,
    "content": {
        "application/json": {"schema": {"type": "array", "items": {"$ref": "#/components/schemas/ContactCreate"}}},
        "text/csv": {"schema": {"type": "string", "description": (
            "Header row; columns email, phone, firstName, lastName, consent.<channel>; "
            "any other column becomes an attribute.")}},
    },
}


@blp.route("", methods=["GET"])
@blp.authenticated
@blp.arguments(ContactQuerySchema, location="query")
@blp.response(200, ContactSchema(many=True))
@blp.paginate(SelectPage)
def list_contacts(filters):
    """Contacts, newest first; `q` searches email, phone and names."""
    return contacts.contacts_query(current_user_id(), **filters)


@blp.route("", methods=["POST"])
@blp.authenticated
@blp.arguments(ContactCreateSchema)
@blp.response(201, ContactSchema)
def create_contact(data):
    """Create a contact; channels it has an address for and no stated consent start `subscribed`."""
    return contacts.create_contact(current_user_id(), data)


@blp.route("/import", methods=["POST"])
@blp.authenticated
@blp.doc(requestBody=IMPORT_BODY)
@blp.response(200, ImportResultSchema)
def import_contacts():
    """Upsert up to 10,000 contacts (JSON array or CSV) by email, then phone; bad rows are reported."""
    rows = read_import_body(request.mimetype, request.mimetype_params.get("charset"), request.get_data())
    return contact_import.import_contacts(current_user_id(), rows)


@blp.route("/<uuid:contact_id>", methods=["GET"])
@blp.authenticated
@blp.response(200, ContactSchema)
def get_contact(contact_id: uuid.UUID):
    return contacts.get_contact(current_user_id(), contact_id)


@blp.route("/<uuid:contact_id>", methods=["PATCH"])
@blp.authenticated
@blp.arguments(ContactUpdateSchema)
@blp.response(200, ContactSchema)
def update_contact(changes, contact_id: uuid.UUID):
    """Change given fields; pushSubscriptions, attributes and externalIds are replaced whole.

    Consent set here never overrides the contact's own unsubscribe; the answer shows the real state.
    """
    return contacts.update_contact(current_user_id(), contact_id, changes)


@blp.route("/<uuid:contact_id>", methods=["DELETE"])
@blp.authenticated
@blp.response(204)
def delete_contact(contact_id: uuid.UUID):
    contacts.delete_contact(current_user_id(), contact_id)


@blp.route("/<uuid:contact_id>/unsubscribe", methods=["POST"])
@blp.authenticated
@blp.arguments(UnsubscribeSchema)
@blp.response(200, ContactSchema)
def unsubscribe(data, contact_id: uuid.UUID):
    """Record the contact's own opt-out, from every channel when `channels` is omitted.

    It is the contact's wish relayed by the merchant, so imports and merchant edits cannot undo it.
    """
    return contacts.unsubscribe(current_user_id(), contact_id, data.get("channels"))


@blp.route("/<uuid:contact_id>/consent-history", methods=["GET"])
@blp.authenticated
@blp.response(200, ConsentChangeSchema(many=True))
def consent_history(contact_id: uuid.UUID):
    """Every change of the contact's consent, oldest first: value, source, how it was written, and
    for their own action the request's IP and user agent."""
    return privacy.consent_history(current_user_id(), contact_id)


@blp.route("/<uuid:contact_id>/export", methods=["GET"])
@blp.authenticated
@blp.response(200, ContactExportSchema)
def export_contact(contact_id: uuid.UUID):
    """Everything Herald holds about the person, in one document: profile, consent and its history,
    activity, messages sent, orders credited, and their addresses' suppressions."""
    return privacy.export(current_user_id(), contact_id)


@blp.route("/<uuid:contact_id>/erase", methods=["POST"])
@blp.authenticated
@blp.response(204)
def erase_contact(contact_id: uuid.UUID):
    """Forget the person: the contact and everything tied to it goes, their addresses leave the
    ledger and the raw events, and stay only as suppression hashes so no sync brings them back.
    Campaign totals stay. Cannot be undone."""
    privacy.erase(current_user_id(), contact_id)
