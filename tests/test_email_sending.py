"""Email campaigns against SMTP servers that misbehave the way relays do: one recipient's 4xx waits
and is sent later, once; a recipient refused too often fails alone; sessions the server drops
between messages are reopened; nothing is sent twice."""
from __future__ import annotations

import asyncio
import dataclasses
import socket
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from aiosmtpd.controller import Controller
from flask import Flask

from app.extensions import db
from app.models import Campaign, CampaignChannel, Delivery
from app.services import sending
from tests.support.campaigns import add_contacts, email_campaign, launch, verified_merchant


class Relay:
    """Takes every message, except: `busy` addresses answer 451 to RCPT the first `busy_times`
    times; every `hang_up_every`-th message is followed by the server closing the session."""

    def __init__(self, busy: set[str] = frozenset(), busy_times: int = 1, hang_up_every: int = 0) -> None:
        self.busy, self.busy_times, self.hang_up_every = set(busy), busy_times, hang_up_every
        self.refusals: Counter = Counter()
        self.received: list[str] = []
        self.sessions: set[object] = set()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.busy and self.refusals[address] < self.busy_times:
            self.refusals[address] += 1
            return "451 4.2.1 Mailbox busy, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.received.extend(envelope.rcpt_tos)
        self.sessions.add(session.peer)
        if self.hang_up_every and len(self.received) % self.hang_up_every == 0:
            # Right after its 250: smtplib waits for that reply before its next command.
            asyncio.get_running_loop().call_soon(server.transport.close)
        return "250 OK"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def _relay(app: Flask, relay: Relay, **settings: Any) -> Iterator[Relay]:
    port = _free_port()
    controller = Controller(relay, hostname="127.0.0.1", port=port)
    controller.start()
    original = app.config["HERALD_SETTINGS"]
    app.config["HERALD_SETTINGS"] = dataclasses.replace(original, smtp_url=f"smtp://127.0.0.1:{port}", **settings)
    try:
        yield relay
    finally:
        app.config["HERALD_SETTINGS"] = original
        controller.stop()


def _launched(count: int) -> tuple[Campaign, CampaignChannel]:
    user = verified_merchant()
    add_contacts(user, count)
    campaign, channel = email_campaign(user)
    launch(user.id, campaign.id)
    return campaign, channel


def _rows(campaign: Campaign) -> dict[str, Delivery]:
    db.session.expire_all()
    return {row.address: row for row in db.session.scalars(sa.select(Delivery).where(Delivery.campaign_id == campaign.id))}


def _status(campaign: Campaign) -> str:
    db.session.expire_all()
    return db.session.get(Campaign, campaign.id).status


def test_a_recipients_4xx_defers_them_alone_and_they_get_the_message_later_once(ctx):
    with _relay(ctx, Relay(busy={"c3@example.com"}), send_retry_seconds=1) as relay:
        campaign, channel = _launched(10)
        assert sending.send_channel(channel.id) == 9
        waiting = _rows(campaign)["c3@example.com"]
        assert (waiting.status, waiting.attempts) == ("queued", 1) and "451" in waiting.error
        assert waiting.not_before is not None
        # The others went out; the campaign waits for the one deferred recipient.
        assert _status(campaign) == "running" and len(relay.received) == 9
        assert sending.send_channel(channel.id) == 0  # not due yet: nothing is tried
        time.sleep(1.1)
        assert sending.send_channel(channel.id) == 1
    assert Counter(relay.received) == {f"c{i}@example.com": 1 for i in range(10)}
    assert {row.status for row in _rows(campaign).values()} == {"delivered"}
    assert _status(campaign) == "completed"


def test_a_recipient_refused_again_and_again_fails_alone_after_the_last_try(ctx):
    with _relay(ctx, Relay(busy={"c0@example.com"}, busy_times=100)) as relay:
        campaign, channel = _launched(3)
        for _ in range(sending.MAX_TRIES):
            sending.send_channel(channel.id)
            # What the clock would do: the deferred row's next try comes due.
            db.session.execute(sa.update(Delivery).where(Delivery.campaign_id == campaign.id)
                               .values(not_before=sa.func.now()))
            db.session.commit()
    refused = _rows(campaign)["c0@example.com"]
    assert refused.status == "failed" and f"refused {sending.MAX_TRIES} times" in refused.error
    assert relay.refusals["c0@example.com"] == sending.MAX_TRIES
    assert sorted(relay.received) == ["c1@example.com", "c2@example.com"]
    assert _status(campaign) == "completed"


def test_sessions_the_relay_drops_between_messages_are_reopened_and_nothing_is_sent_twice(ctx):
    with _relay(ctx, Relay(hang_up_every=3)) as relay:
        campaign, channel = _launched(40)
        assert sending.send_channel(channel.id) == 40
    assert Counter(relay.received) == {f"c{i}@example.com": 1 for i in range(40)}
    assert len(relay.sessions) > 4  # more sessions than the sender keeps open at once: it reconnected
    assert {row.status for row in _rows(campaign).values()} == {"delivered"}
