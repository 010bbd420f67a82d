"""One catalogue of channels: every per-channel table agrees with it, and an unknown channel raises
wherever a channel type is looked up, never falling back to some default."""
from __future__ import annotations

import pytest

from app.channels import catalogue
from app.channels.account_configs import ACCOUNT_CONFIG_SCHEMAS
from app.channels.configs import CONFIG_SCHEMAS
from app.services import audience_sql
from app.services.provider_accounts import ACCOUNT_REF_FIELDS


def test_every_table_covers_exactly_the_catalogue():
    assert set(CONFIG_SCHEMAS) == set(catalogue.CHANNEL_TYPES) == {"email", "sms", "push", "whatsapp"}
    assert set(ACCOUNT_CONFIG_SCHEMAS) == set(catalogue.ACCOUNT_CHANNELS) == {"sms", "push", "whatsapp"}
    assert ACCOUNT_REF_FIELDS == {"sms": "accountSid", "whatsapp": "phoneNumberId"}
    for channel_type in catalogue.CHANNEL_TYPES:
        spec = catalogue.spec(channel_type)
        assert spec.address in catalogue.ADDRESS_KINDS
        assert callable(getattr(catalogue.sender_class(channel_type), "transmit", None))


def test_a_missing_table_entry_stops_start_up():
    with pytest.raises(RuntimeError, match="must cover exactly email, sms, push, whatsapp"):
        catalogue.require_every_channel({"email": object()}, "CONFIG_SCHEMAS")


def test_reachable_channels_follow_the_address_kinds():
    assert catalogue.reachable_channels(email=True, phone=False, push=False) == {"email"}
    assert catalogue.reachable_channels(email=False, phone=True, push=False) == {"sms", "whatsapp"}
    assert catalogue.reachable_channels(email=False, phone=False, push=True) == {"push"}


def test_an_unknown_channel_raises_instead_of_defaulting():
    with pytest.raises(catalogue.UnknownChannel):
        catalogue.spec("fax")
    with pytest.raises(catalogue.UnknownChannel):
        audience_sql.contact_address("fax")  # once treated as phone-addressed
