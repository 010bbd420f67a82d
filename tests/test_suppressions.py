"""The suppression list: kept per address (by hash), skipped at launch and at claim with its reason,
held against imports, API edits and synced data, managed through the API with CSV in and out."""
from __future__ import annotations

import csv
import io

import sqlalchemy as sa

from app.extensions import db
from app.models import Contact, DataEvent, Delivery, Suppression
from app.services import event_processing, sending, suppressions
from tests.support.accounts import signed_in
from tests.support.campaigns import add_contacts, email_campaign, launch, verified_merchant
from tests.support.sources import make_source

API = "/api/v1/suppressions"


def _rows(campaign_id) -> dict[str, Delivery]:
    db.session.expire_all()
    return {row.address: row for row in db.session.scalars(sa.select(Delivery).where(
        Delivery.campaign_id == campaign_id))}


def test_the_list_through_the_api(client, app_ctx):
    _, headers = signed_in(client)
    added = client.post(API, json={"kind": "email", "address": " Ana@Example.COM ", "reason": "complained"},
                        headers=headers)
    assert added.status_code == 201
    body = added.get_json()
    assert (body["kind"], body["address"], body["reason"]) == ("email", "ana@example.com", "complained")
    assert body["addressSha256"] == suppressions.address_hash("ana@example.com")
    again = client.post(API, json={"kind": "email", "address": "ana@example.com"}, headers=headers)
    assert again.status_code == 201 and again.get_json()["reason"] == "complained"  # the first reason stays
    bad = client.post(API, json={"kind": "phone", "address": "not a number"}, headers=headers)
    assert bad.status_code == 422 and "address" in bad.get_json()["errors"]
    assert client.post(API, json={"kind": "email", "address": "x@example.com", "reason": "erased"},
                       headers=headers).status_code == 422
    listed = client.get(API, headers=headers).get_json()
    assert [entry["address"] for entry in listed] == ["ana@example.com"]
    _, other = signed_in(client)
    assert client.get(API, headers=other).get_json() == []
    assert client.delete(f"{API}/{body['id']}", headers=other).status_code == 404
    assert client.delete(f"{API}/{body['id']}", headers=headers).status_code == 204
    assert client.get(API, headers=headers).get_json() == []


def test_csv_import_is_all_or_nothing_and_export_lists_everything(client, app_ctx):
    _, headers = signed_in(client)
    bad = client.post(f"{API}/import", data="email,reason\nok@example.com,manual\nnot-an-email,manual\n",
                      content_type="text/csv", headers=headers)
    assert bad.status_code == 422 and bad.get_json()["errors"]["rows"][0]["row"] == 3
    assert client.get(API, headers=headers).get_json() == []
    good = client.post(f"{API}/import", data="email,phone,reason\nok@example.com,+14155550100,bounced\n"
                                             "two@example.com,,\n", content_type="text/csv", headers=headers)
    assert good.status_code == 200 and good.get_json() == {"added": 3, "already": 0}
    exported = client.get(f"{API}/export", headers=headers)
    assert exported.status_code == 200 and exported.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(exported.get_data(as_text=True))))
    assert sorted((r["kind"], r["address"], r["reason"]) for r in rows) == [
        ("email", "ok@example.com", "bounced"), ("email", "two@example.com", "manual"),
        ("phone", "+14155550100", "bounced")]


def test_a_csv_file_whose_structure_is_broken_is_refused_with_the_reason(client, app_ctx):
    _, headers = signed_in(client)
    too_long = "email\n" + "x" * 200_000 + "@example.com\n"  # past the csv module's field limit
    broken = client.post(f"{API}/import", data=too_long, content_type="text/csv", headers=headers)
    assert broken.status_code == 422 and "file" in broken.get_json()["errors"]
    # A bare carriage return ends a row, as spreadsheets on old Macs write them.
    old_mac = client.post(f"{API}/import", data="email\rcr@example.com\r", content_type="text/csv", headers=headers)
    assert old_mac.status_code == 200 and old_mac.get_json() == {"added": 1, "already": 0}


def test_a_suppressed_address_stays_off_whatever_the_merchant_imports(client, app_ctx):
    _, headers = signed_in(client)
    client.post(API, json={"kind": "email", "address": "gone@example.com", "reason": "bounced"}, headers=headers)
    created = client.post("/api/v1/contacts", json={"email": "Gone@example.com", "consent": {"email": "subscribed"}},
                          headers=headers).get_json()
    assert created["consent"]["email"] == "bounced"
    imported = client.post("/api/v1/contacts/import", data="email,consent.email\ngone@example.com,subscribed\n",
                           content_type="text/csv", headers=headers)
    assert imported.status_code == 200
    fetched = client.get(f"/api/v1/contacts/{created['id']}", headers=headers).get_json()
    assert fetched["consent"]["email"] == "bounced"
    patched = client.patch(f"/api/v1/contacts/{created['id']}", json={"consent": {"email": "subscribed"}},
                           headers=headers).get_json()
    assert patched["consent"]["email"] == "bounced"


def test_synced_data_cannot_resubscribe_a_suppressed_address(app_ctx):
    user = verified_merchant()
    suppressions.add(user.id, "email", "eve@example.com", "unsubscribed")
    shop, _ = make_source(user, "shopify")
    db.session.add(DataEvent(data_source_id=shop.id, event_type="customers/update", event_data={
        "id": 5, "email": "eve@example.com", "email_marketing_consent": {"state": "subscribed"}}))
    db.session.commit()
    event_processing.process_batch()
    db.session.expire_all()
    contact = db.session.scalars(sa.select(Contact).where(Contact.user_id == user.id)).one()
    assert (contact.consent["email"], contact.consent_sources["email"]) == ("unsubscribed", "contact")


def test_suppressed_addresses_are_skipped_at_launch_and_at_claim(ctx, smtp_sink):
    user = verified_merchant()
    people = add_contacts(user, 3)
    suppressions.add(user.id, "email", people[0].email, "complained")
    campaign, channel = email_campaign(user)
    launch(user.id, campaign.id)
    rows = _rows(campaign.id)
    assert (rows["c0@example.com"].status, rows["c0@example.com"].skip_reason) == ("skipped", "suppressed")
    # Suppressed after the launch wrote its row: skipped when its turn comes, never sent.
    suppressions.add(user.id, "email", "C1@example.com", "bounced")
    assert sending.send_channel(channel.id) == 1
    smtp_sink.wait_for(1)
    assert [rcpt for mail in smtp_sink.messages for rcpt in mail.recipients] == ["c2@example.com"]
    rows = _rows(campaign.id)
    assert (rows["c1@example.com"].status, rows["c1@example.com"].skip_reason) == ("skipped", "suppressed")
    assert db.session.scalar(sa.select(sa.func.count(Suppression.id)).where(Suppression.user_id == user.id)) == 2
