"""The OpenAPI document as generated clients read it: fields that can be null say so, every route
documents the statuses it can answer, the error body is described as it is sent, and /docs works
without the internet."""
from __future__ import annotations

import re

import pytest
from marshmallow import Schema

from app import models
from app.api.openapi import ROUTE_STATUSES
from app.schemas.api_keys import ApiKeySchema
from app.schemas.audiences import AudienceSchema
from app.schemas.campaigns import CampaignSchema, ChannelSchema, DeliverySchema
from app.schemas.contacts import ContactSchema
from app.schemas.conversations import ConversationSchema, MessageSchema
from app.schemas.data_sources import DataSourceSchema, SyncRunSchema
from app.schemas.privacy import ConsentChangeSchema
from app.schemas.provider_accounts import ProviderAccountSchema
from app.schemas.suppressions import SuppressionSchema
from app.schemas.users import SessionSchema, UserSchema

# Each output schema beside the model it shows: a nullable column must be a nullable field.
SHOWN_MODELS: dict[type[Schema], type] = {
    UserSchema: models.User, SessionSchema: models.UserSession, ApiKeySchema: models.ApiKey,
    ContactSchema: models.Contact, CampaignSchema: models.Campaign, ChannelSchema: models.CampaignChannel,
    DeliverySchema: models.Delivery, AudienceSchema: models.Audience, ConversationSchema: models.Conversation,
    MessageSchema: models.Message, DataSourceSchema: models.DataSource, SyncRunSchema: models.SyncRun,
    ConsentChangeSchema: models.ConsentChange, ProviderAccountSchema: models.ProviderAccount,
    SuppressionSchema: models.Suppression,
}


@pytest.fixture(scope="module")
def spec(app):
    return app.test_client().get("/openapi.json").get_json()


def _operations(spec):
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method != "parameters":
                yield path, method, operation


@pytest.mark.parametrize("schema", list(SHOWN_MODELS), ids=lambda schema: schema.__name__)
def test_a_column_that_can_be_null_is_a_field_that_can_be_null(schema):
    model = SHOWN_MODELS[schema]
    columns = {attr.key: attr for attr in model.__mapper__.column_attrs}
    not_nullable = []
    for name, field in schema().fields.items():
        column = columns.get(field.attribute or name)
        if column is not None and any(getattr(c, "nullable", False) for c in column.columns) and not field.allow_none:
            not_nullable.append(field.data_key or name)
    assert not not_nullable, f"{schema.__name__}: nullable in the database, not in the document: {not_nullable}"


def test_nullable_fields_say_so_in_openapi_3_1(spec):
    user = spec["components"]["schemas"]["User"]["properties"]
    assert user["lastLoginAt"]["type"] == ["string", "null"]
    assert user["email"]["type"] == "string"
    delivery = spec["components"]["schemas"]["Delivery"]["properties"]
    assert delivery["contactId"]["type"] == ["string", "null"]


def test_the_error_body_is_described_as_it_is_sent(client, spec):
    error = spec["components"]["schemas"]["Error"]
    assert error["properties"]["status"]["type"] == "integer"
    assert error["properties"]["code"]["type"] == "string"
    assert set(error["required"]) == {"status", "code", "message"}
    body = client.get("/api/v1/users/me").get_json()
    assert set(body) <= set(error["properties"]) and body["status"] == 401


def test_every_route_documents_the_statuses_it_can_answer(spec):
    for path, method, operation in _operations(spec):
        statuses = set(operation["responses"])
        where = f"{method.upper()} {path}"
        assert "default" in statuses, where  # 500
        if path != "/healthz":
            assert "503" in statuses and "Retry-After" in operation["responses"]["503"]["headers"], where
        if "{" in path:
            assert "404" in statuses, where
        if method in ("post", "put", "patch"):
            assert {"400", "413"} <= statuses, where
        if operation.get("security"):
            assert {"401", "403"} <= statuses, where
            if method != "get":
                assert "409" in statuses, where
    throttled = {path for path, method, operation in _operations(spec) if "429" in operation["responses"]}
    assert {"/api/v1/auth/login", "/api/v1/auth/register", "/ingest/gtm/{source_id}"} <= throttled


def test_every_route_named_for_its_statuses_exists(app):
    endpoints = {rule.endpoint for rule in app.url_map.iter_rules()}
    blueprints = {endpoint.partition(".")[0] for endpoint in endpoints}
    assert set(ROUTE_STATUSES) <= endpoints | blueprints


def test_docs_work_offline_with_swagger_ui_5(client):
    page = client.get("/docs")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert not re.search(r"(src|href)=\"(https?:)?//", html), "the page loads something from another host"
    for asset in re.findall(r"(?:src|href)=\"([^\"]+)\"", html):
        loaded = client.get(asset)
        assert loaded.status_code == 200, asset
        loaded.close()
    bundle = client.get("/docs/assets/swagger-ui-bundle.js")
    version = re.search(rb'PACKAGE_VERSION:"(\d+)\.\d+\.\d+"', bundle.get_data())
    bundle.close()
    assert version and int(version.group(1)) >= 5  # 5 reads OpenAPI 3.1
