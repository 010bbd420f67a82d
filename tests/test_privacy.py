"""People's data: consent history from every path, the export, and erasure that leaves no trace of the
person in any table while campaign totals stay and the next sync does not bring them back."""
from __future__ import annotations

import sqlalchemy as sa

from app.extensions import db
from app.models import CampaignChannel, Contact, DataEvent, Delivery, Suppression
from app.services import event_processing, sending, suppressions
from app.sources.normalize import sha256_email
from tests.support.accounts import signed_in
from tests.support.campaigns import email_campaign, launch, verified_sender
from tests.support.sources import capi_event, make_source, shopify_order
from tests.test_email_channel import tracked_links

EMAIL, PHONE = "jon@example.com", "+16135551212"
CUSTOMER_ID = 115310627314723954


def _user(client, app):
    _, headers = signed_in(client)
    from app.models import User
    with app.app_context():
        user = db.session.scalars(sa.select(User).order_by(User.created_at.desc())).first()
        user.is_verified = True
        verified_sender(user.id)
        db.session.commit()
        return user.id, headers


def test_consent_history_records_every_path_with_the_persons_own_request(ctx, live_client, smtp_sink):
    user_id, headers = _user(live_client, ctx)
    contact = live_client.post("/api/v1/contacts", json={"email": EMAIL}, headers=headers).get_json()
    live_client.post("/api/v1/contacts/import", data=f"email,consent.email\n{EMAIL},unsubscribed\n",
                     content_type="text/csv", headers=headers)
    live_client.patch(f"/api/v1/contacts/{contact['id']}", json={"consent": {"email": "subscribed"}}, headers=headers)
    from app.models import User
    user = db.session.get_one(User, user_id)
    campaign, channel = email_campaign(user)
    launch(user_id, campaign.id)
    sending.send_channel(channel.id)
    (mail,) = [m for m in smtp_sink.wait_for(1) if EMAIL in m.recipients]
    token = tracked_links(mail.html())["u"][0]
    assert live_client.post(f"/t/u/{token}", data={"List-Unsubscribe": "One-Click"}, headers={
        "User-Agent": "Mailbox/1.0", "X-Forwarded-For": "198.51.100.7"}).status_code == 200

    history = live_client.get(f"/api/v1/contacts/{contact['id']}/consent-history", headers=headers).get_json()
    assert [(h["channel"], h["value"], h["source"], h["via"]) for h in history] == [
        ("email", "subscribed", "merchant", "api"),
        ("email", "unsubscribed", "merchant", "import"),
        ("email", "subscribed", "merchant", "api"),
        ("email", "unsubscribed", "contact", "unsubscribe_link"),
    ]
    assert history[-1]["userAgent"] == "Mailbox/1.0" and history[-1]["ip"]
    assert all(h["ip"] is None for h in history[:-1])
    _, other = signed_in(live_client)
    assert live_client.get(f"/api/v1/contacts/{contact['id']}/consent-history", headers=other).status_code == 404


def _text_columns() -> list[tuple[str, str]]:
    return [tuple(row) for row in db.session.execute(sa.text(
        "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'public' "
        "AND data_type IN ('text', 'character varying', 'jsonb', 'json')"))]


def _traces(*needles: str) -> list[str]:
    found = []
    for table, column in _text_columns():
        for needle in needles:
            hits = db.session.scalar(sa.text(f'SELECT count(*) FROM "{table}" WHERE "{column}"::text ILIKE :needle'),
                                     {"needle": f"%{needle}%"})
            if hits:
                found.append(f"{table}.{column}: {needle}")
    return found


def test_erasure_leaves_no_trace_keeps_totals_and_the_next_sync_does_not_bring_them_back(ctx, live_client,
                                                                                          smtp_sink):
    user_id, headers = _user(live_client, ctx)
    from app.models import User
    user = db.session.get_one(User, user_id)
    shop, _ = make_source(user, "shopify")
    pixel, _ = make_source(user, "facebook_pixel")
    db.session.add_all([
        DataEvent(data_source_id=shop.id, event_type="orders/create", event_data=shopify_order(email=EMAIL)),
        DataEvent(data_source_id=pixel.id, event_type="Purchase", event_data=capi_event(
            email_sha256=sha256_email(EMAIL))),
    ])
    db.session.commit()
    event_processing.process_batch()
    (contact,) = db.session.scalars(sa.select(Contact).where(Contact.user_id == user_id)).all()
    contact_id = contact.id
    campaign, channel = email_campaign(user)
    launch(user_id, campaign.id)
    assert sending.send_channel(channel.id) == 1
    smtp_sink.wait_for(1)
    exported = live_client.get(f"/api/v1/contacts/{contact_id}/export", headers=headers).get_json()
    assert exported["contact"]["email"] == EMAIL and len(exported["activity"]) == 2
    assert [(m["campaignName"], m["status"]) for m in exported["messages"]] == [("Winter sale", "delivered")]
    assert exported["consentHistory"][0]["via"] == "event"
    assert _traces(EMAIL, PHONE.lstrip("+"))  # the person is all over the data before

    assert live_client.post(f"/api/v1/contacts/{contact_id}/erase", headers=headers).status_code == 204
    db.session.expire_all()
    # Only the suppression list keeps the address, as its hash.
    assert _traces(EMAIL, PHONE.lstrip("+"), sha256_email(EMAIL), str(CUSTOMER_ID)) == [
        f"suppressions.addressHash: {sha256_email(EMAIL)}"]
    assert live_client.get(f"/api/v1/contacts/{contact_id}", headers=headers).status_code == 404
    channel_row = db.session.get_one(CampaignChannel, channel.id)
    assert (channel_row.sent_count, channel_row.delivered_count) == (1, 1)  # totals stay true
    assert db.session.scalar(sa.select(sa.func.count(Delivery.id)).where(Delivery.campaign_id == campaign.id)) == 1
    kept = db.session.scalars(sa.select(Suppression).where(Suppression.user_id == user_id)).all()
    assert {(s.kind, s.address, s.reason) for s in kept} == {("email", None, "erased"), ("phone", None, "erased")}
    assert suppressions.address_hash(EMAIL) in {s.address_hash for s in kept}

    # The next sync names them again: their events are kept, but no contact comes back.
    db.session.add(DataEvent(data_source_id=shop.id, event_type="customers/update", event_data={
        "id": CUSTOMER_ID + 1, "email": EMAIL, "email_marketing_consent": {"state": "subscribed"}}))
    db.session.commit()
    event_processing.process_batch()
    db.session.expire_all()
    assert db.session.scalar(sa.select(sa.func.count(Contact.id)).where(Contact.user_id == user_id)) == 0


def test_the_export_is_its_own_snapshot_after_earlier_reads_in_the_same_session(client):
    """A test client shares one session across requests, so reads before the export leave a transaction
    open; the export must still begin its own snapshot."""
    _, headers = signed_in(client)
    contact = client.post("/api/v1/contacts", json={"email": EMAIL}, headers=headers).get_json()
    assert client.get(f"/api/v1/contacts/{contact['id']}", headers=headers).status_code == 200
    exported = client.get(f"/api/v1/contacts/{contact['id']}/export", headers=headers)
    assert exported.status_code == 200, exported.get_json()
    assert exported.get_json()["contact"]["email"] == EMAIL
