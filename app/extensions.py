"""Extensions, created unbound here and bound to the app once in `create_app()`."""
from typing import Any, cast

import orjson
import psycopg2.extras
import redis
import sqlalchemy as sa
from flask import Response, current_app
from flask_jwt_extended import JWTManager
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_migrate import Migrate
from flask_smorest import Api
from flask_smorest.pagination import PaginationMetadataSchema
from flask_sqlalchemy import SQLAlchemy

from app.config import AUTOCOMMIT_BIND
from app.models.base import Base
from app.schemas.errors import ErrorSchema

db = SQLAlchemy(model_class=Base)
migrate = Migrate()
jwt = JWTManager()


class HeraldApi(Api):
    ERROR_SCHEMA = ErrorSchema  # the body app.errors answers with, in place of flask-smorest's own

    def _register_pagination_header(self) -> None:
        # X-Pagination's value is JSON: OpenAPI says so with `content` (a bare `schema` would mean
        # the "key,value,key,value" form of a header object).
        self.spec.components.header("PAGINATION", {
            "description": "Pagination metadata, as JSON.",
            "content": {"application/json": {"schema": PaginationMetadataSchema}},
        }, lazy=True)


api = HeraldApi()
# Default key is the client address as the proxy-aware request sees it (see ProxyFix in create_app).
limiter = Limiter(get_remote_address)


def retry_after_only_when_refused(response: Response) -> Response:
    """flask-limiter puts Retry-After on every answer of a limited route; it means "come back
    later" (RFC 9110 §10.2.3), so only a 429 or a 503 carries it. The X-RateLimit-* headers stay."""
    if response.status_code not in (429, 503):
        response.headers.pop("Retry-After", None)
    return response

# psycopg2 parses json/jsonb with the standard library by default; orjson is several times faster
# on the event payloads and contact records the workers read in bulk.
psycopg2.extras.register_default_json(globally=True, loads=orjson.loads)
psycopg2.extras.register_default_jsonb(globally=True, loads=orjson.loads)


def redis_client() -> redis.Redis:
    """The app's Redis client (pooled; redis-py resets its pool in a forked child)."""
    return current_app.extensions["redis"]


def rowcount(result: sa.Result[Any]) -> int:
    """The rows an INSERT, UPDATE or DELETE affected. `Session.execute` is typed to return a Result;
    for these statements it is a CursorResult, which carries the count."""
    return cast(sa.CursorResult[Any], result).rowcount


def autocommit_engine() -> sa.Engine:
    """The app's engine whose connections run each statement on its own (no transaction)."""
    return db.engines[AUTOCOMMIT_BIND]
