"""The blueprint every API resource uses: flask-smorest's, plus bearer-token protection."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, overload

import flask_smorest
import sqlalchemy as sa
from flask import Request
from flask.json.provider import DefaultJSONProvider
from flask_jwt_extended import jwt_required
from flask_smorest import Page
from marshmallow import missing
from webargs.flaskparser import FlaskParser, abort, is_json_request

from app.extensions import db
from app.schemas.json_input import JsonRejected, parse

BEARER_SECURITY: list[dict[str, list[str]]] = [{"bearerAuth": []}]
# Beyond any real listing; a larger OFFSET would overflow PostgreSQL's bigint (a page past the end
# is simply empty).
MAX_OFFSET = 2**40


class JsonBodyParser(FlaskParser):
    """Request bodies parsed by app.schemas.json_input: invalid JSON or nesting past its bound is a
    400, text PostgreSQL cannot store a 422 naming where it is."""

    def _raw_load_json(self, req):
        if not is_json_request(req):
            return missing
        raw = req.get_data(cache=True)
        if not raw.strip():
            return missing
        try:
            return parse(raw)
        except JsonRejected as exc:
            if exc.path is None:
                abort(400, messages={"json": [exc.message]})
            errors: Any = [exc.message]
            for part in reversed(exc.path):  # nested by field, as schema errors are
                errors = {part: errors}
            abort(422, messages={"json": errors})


class JsonProvider(DefaultJSONProvider):
    """`request.get_json()` parses as the blueprints do (rate-limit keys read bodies that way)."""

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        return parse(s.encode("utf-8", "surrogatepass") if isinstance(s, str) else s)


class BoundedRequest(Request):
    """A chunked body (no Content-Length) is cut at the size limit by werkzeug without an error, which
    would surface as "invalid JSON"; reading one byte past the limit raises the 413 it deserves."""

    @overload
    def get_data(self, cache: bool = True, as_text: Literal[False] = False, parse_form_data: bool = False) -> bytes: ...
    @overload
    def get_data(self, cache: bool = True, as_text: Literal[True] = ..., parse_form_data: bool = False) -> str: ...
    def get_data(self, cache: bool = True, as_text: bool = False, parse_form_data: bool = False) -> bytes | str:
        data = super().get_data(cache=cache, as_text=False, parse_form_data=parse_form_data)
        limit = self.max_content_length
        if self.content_length is None and limit is not None and len(data) >= limit:
            self.stream.read(1)
        return data.decode(errors="replace") if as_text else data


class HeraldBlueprint(flask_smorest.Blueprint):
    ARGUMENTS_PARSER = JsonBodyParser()


class ApiBlueprint(HeraldBlueprint):
    def authenticated(self, view: Callable[..., Any]) -> Callable[..., Any]:
        """Require a live access token (401 otherwise) and document it in the OpenAPI spec."""
        return self.doc(security=BEARER_SECURITY)(jwt_required()(view))


class SelectPage(Page):
    """flask-smorest pagination over a SQLAlchemy select: LIMIT/OFFSET and a COUNT, in SQL."""

    @property
    def items(self) -> list[Any]:
        if self.page_params.first_item > MAX_OFFSET:
            return []
        stmt = self.collection.offset(self.page_params.first_item).limit(self.page_params.page_size)
        return list(db.session.scalars(stmt))

    @property
    def item_count(self) -> int:
        counted = sa.select(sa.func.count()).select_from(self.collection.order_by(None).subquery())
        return db.session.execute(counted).scalar_one()
