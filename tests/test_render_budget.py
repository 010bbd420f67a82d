"""Templates render within a budget of time and output: refused when a config is saved, and, for a
template that only explodes on one contact's data, that contact's message fails with the reason."""
from __future__ import annotations

import time
from collections import Counter

import pytest
import sqlalchemy as sa

from app.extensions import db
from app.models import Contact, Delivery
from app.services import sending
from app.services.rendering import MAX_OUTPUT, RenderBudgetExceeded, render
from tests.support.accounts import signed_in
from tests.support.campaigns import add_contacts, email_campaign, launch, verified_merchant

COSTLY = [
    "{{ 'x' * 30000000 }}",
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "{{ 'x'|center(1000000000) }}",
    "{{ ('x' * 100000)|replace('', 'y' * 100000) }}",
    "{{ (['x' * 200000] * 200000)|join }}",
    "{{ '%0999999999d' % 1 }}",
    "{{ '{:>999999999}'.format(1) }}",
    "{{ 9 ** 99999999 }}",
    "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(40) }}",
    "{% set s = 'x' * 200000 %}{% for a in s %}{% for b in s %}{% endfor %}{% endfor %}",
    "{% for i in range(100000) %}{{ 'xxxxxxxxxx' }}{% endfor %}",
]
FINE = {
    "Hi {{ contact.firstName }}": "Hi Ada",
    "{% for t in contact.attributes.tags %}{{ t }};{% endfor %}": "a;b;",
    "{{ contact.attributes.tags|join(', ') }} {{ '%05d' % 42 }} {{ '{:>4}'.format('x') }}": "a, b 00042    x",
    "{{ 'x'|center(5) }}|{{ 'a b'|replace(' ', '-') }}|{{ 2 ** 10 }}": "  x  |a-b|1024",
}


@pytest.mark.parametrize("source", COSTLY)
def test_costly_templates_stop_quickly(source):
    started = time.perf_counter()
    with pytest.raises(RenderBudgetExceeded):
        render(source, {"firstName": "Ada", "attributes": {}})
    assert time.perf_counter() - started < 2


def test_ordinary_templates_render_as_before():
    contact = {"firstName": "Ada", "attributes": {"tags": ["a", "b"]}}
    assert {source: render(source, contact) for source in FINE} == FINE


@pytest.mark.parametrize("source", COSTLY[:4])
def test_a_costly_template_is_refused_when_saved(client, app_ctx, source):
    _, headers = signed_in(client)
    campaign = client.post("/api/v1/campaigns", headers=headers, json={"name": "Sale"}).get_json()
    response = client.post(f"/api/v1/campaigns/{campaign['id']}/channels", headers=headers,
                           json={"channelType": "sms", "config": {"body": source}})
    assert response.status_code == 422
    assert "too costly" in response.get_json()["errors"]["config"]["body"][0]
    assert client.get(f"/api/v1/campaigns/{campaign['id']}/channels", headers=headers).get_json() == []


def test_a_template_over_budget_for_one_contact_fails_that_message_only(app, committed_db, smtp_sink):
    with app.app_context():
        user = verified_merchant()
        people = add_contacts(user, 3)
        people[1].attributes = {"note": "x" * 1000}  # times 1,000: past the output budget
        db.session.commit()
        campaign, channel = email_campaign(user, {"text": "{{ (contact.attributes.note or '') * 1000 }}"})
        launch(user.id, campaign.id)
        sending.send_channel(channel.id)
        smtp_sink.wait_for(2)
        db.session.expire_all()
        rows = db.session.execute(sa.select(Contact.email, Delivery.status, Delivery.error)
                                  .join(Contact, Contact.id == Delivery.contact_id)
                                  .where(Delivery.campaign_id == campaign.id)).all()
        assert Counter(row.status for row in rows) == {"delivered": 2, "failed": 1}
        (failed,) = [row for row in rows if row.status == "failed"]
        assert failed.email == people[1].email and f"more than {MAX_OUTPUT:,} characters" in failed.error
