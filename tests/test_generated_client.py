"""A client generated from /openapi.json by openapi-python-client, as an integrator would make one,
registers, logs in, adds and lists contacts against the app on a real port. Its models parse every
answer strictly: a field the document says cannot be null that comes back null fails here."""
from __future__ import annotations

import importlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import requests

from tests.support.accounts import PASSWORD, unique_email
from tests.support.servers import serving

pytestmark = pytest.mark.slow
PACKAGE = "herald_client"


@pytest.fixture()
def generated(app, committed_db, tmp_path) -> Iterator[tuple[str, ModuleType]]:
    with serving(app) as base:
        spec = tmp_path / "openapi.json"
        spec.write_bytes(requests.get(f"{base}/openapi.json", timeout=10).content)
        generator = Path(sys.executable).with_name("openapi-python-client")
        done = subprocess.run([str(generator), "generate", "--path", str(spec), "--meta", "none",
                               "--output-path", str(tmp_path / PACKAGE)], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        sys.path.insert(0, str(tmp_path))
        try:
            yield base, importlib.import_module(PACKAGE)
        finally:
            sys.path.remove(str(tmp_path))
            for name in [name for name in sys.modules if name == PACKAGE or name.startswith(f"{PACKAGE}.")]:
                del sys.modules[name]


def _module(name: str) -> ModuleType:
    return importlib.import_module(f"{PACKAGE}.{name}")


def test_a_generated_client_registers_logs_in_and_lists_contacts(generated):
    base, client_package = generated
    models = _module("models")
    register = _module("api.auth.post_api_v1_auth_register")
    login = _module("api.auth.post_api_v1_auth_login")
    create_contact = _module("api.contacts.post_api_v1_contacts")
    list_contacts = _module("api.contacts.get_api_v1_contacts")
    me = _module("api.users.get_api_v1_users_me")

    email = unique_email("generated")
    with client_package.Client(base_url=base, raise_on_unexpected_status=True) as anonymous:
        user = register.sync(client=anonymous, body=models.Register(email=email, password=PASSWORD))
        # A new account has never logged in and has no names: nulls the models must take.
        assert isinstance(user, models.User) and user.email == email
        assert user.last_login_at is None and user.first_name is None

        refused = login.sync_detailed(client=anonymous, body=models.Login(email=email, password="wrong " + PASSWORD))
        assert refused.status_code == 401 and isinstance(refused.parsed, models.Error)
        assert refused.parsed.code == "unauthorized"

        tokens = login.sync(client=anonymous, body=models.Login(email=email, password=PASSWORD))
        assert isinstance(tokens, models.TokenPair) and tokens.user.last_login_at is not None

    with client_package.AuthenticatedClient(base_url=base, token=tokens.access_token,
                                            raise_on_unexpected_status=True) as client:
        assert me.sync(client=client).email == email
        created = create_contact.sync(client=client, body=models.ContactCreate(email="ada@example.com", first_name="Ada"))
        assert isinstance(created, models.Contact) and created.phone is None
        create_contact.sync(client=client, body=models.ContactCreate(phone="+14155550123"))

        listed = list_contacts.sync(client=client)
        assert {(contact.email, contact.phone, contact.first_name) for contact in listed} == {
            ("ada@example.com", None, "Ada"), (None, "+14155550123", None)}
        found = list_contacts.sync(client=client, email="ADA@example.com")
        assert [contact.id for contact in found] == [created.id]
