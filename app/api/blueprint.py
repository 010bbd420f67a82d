"""The blueprint every API resource uses: flask-smorest's, plus authentication (a login token or an
API key with the route's scope) and `Idempotency-Key` on POSTs."""
from __future__ import annotations

from collections.abc import Callable
from copy import deepcopy
from functools import wraps
from typing import Any, Literal, overload

import flask_smorest
import sqlalchemy as sa
from flask import Request
from flask.json.provider import DefaultJSONProvider
from flask_smorest import Page
from flask_smorest.utils import deepupdate
from marshmallow import missing
from webargs.flaskparser import FlaskParser, abort, is_json_request

from app.api import idempotency
from app.api.authentication import authenticate
from app.extensions import db
from app.schemas.json_input import JsonRejected, parse
from app.security.api_keys import LOGIN_ONLY, READ, SCOPES

LOGIN_SCHEME, KEY_SCHEME = "bearerAuth", "apiKeyAuth"
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
        if not raw:
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


class RouteAccess:
    """What an authenticated route asks of the credential; settled when the route is registered,
    since the scope depends on the method (`read` for a GET)."""

    def __init__(self, scope: str | None) -> None:
        self.scope = scope or ""
        self.method = ""

    def settle(self, method: str, write_scope: str) -> None:
        self.method = method
        if not self.scope:
            self.scope = LOGIN_ONLY if write_scope == LOGIN_ONLY else READ if method == "GET" else write_scope
        if self.scope != LOGIN_ONLY and self.scope not in SCOPES:
            raise ValueError(f"unknown scope {self.scope!r}")

    def apidoc(self, apidoc: dict[str, Any]) -> dict[str, Any]:
        security: list[dict[str, list[str]]] = [{LOGIN_SCHEME: []}]
        responses = {"401": _error_doc("No credential, or an invalid, expired or revoked one.")}
        if self.scope != LOGIN_ONLY:
            security.append({KEY_SCHEME: [self.scope]})
            responses["403"] = _error_doc(f"An API key without the `{self.scope}` scope.")
        else:
            responses["403"] = _error_doc("An API key: this route takes a login access token only.")
        apidoc = deepcopy(apidoc)
        if self.method == "POST":
            responses["409"] = _error_doc(f"A request with this `{idempotency.HEADER}` is still running, or the "
                                          "resource's current state does not allow this, or it would duplicate another.")
            if "arguments" not in apidoc:  # else documented already, as invalid input
                responses["422"] = _error_doc(f"This `{idempotency.HEADER}` came with a different request.")
            # Beside the route's own parameters (a manual doc's list would replace them).
            apidoc.setdefault("arguments", {}).setdefault("parameters", []).append(dict(IDEMPOTENCY_KEY_PARAMETER))
        return deepupdate(apidoc, {"manual_doc": {"security": security, "responses": responses}})


class ApiBlueprint(HeraldBlueprint):
    """`write_scope`: the API-key scope this resource's non-GET routes need, or LOGIN_ONLY (no key
    may use any of its routes). Every resource says which: an unknown scope stops the app's start."""

    def __init__(self, *args: Any, write_scope: str, **kwargs: Any) -> None:
        if write_scope != LOGIN_ONLY and write_scope not in SCOPES:
            raise ValueError(f"unknown scope {write_scope!r}")
        self.write_scope = write_scope
        super().__init__(*args, **kwargs)

    def authenticated(self, view: Callable[..., Any] | None = None, *, scope: str | None = None) -> Any:
        """Require a live login token, or an API key holding the route's scope (401, 403 otherwise),
        and honour `Idempotency-Key` on a POST. `scope` overrides the one derived from the method."""

        def decorate(view: Callable[..., Any]) -> Callable[..., Any]:
            access = RouteAccess(scope)

            @wraps(view)
            def guarded(*args: Any, **kwargs: Any) -> Any:
                principal = authenticate(access.scope)
                if access.method == "POST":
                    replayed = idempotency.begin(principal.user_id)
                    if replayed is not None:
                        return replayed
                return view(*args, **kwargs)

            guarded.route_access = access  # type: ignore[attr-defined]
            return guarded

        return decorate(view) if view is not None else decorate

    def route(self, rule: str, *, parameters: list[Any] | None = None, tags: list[str] | None = None,
              **options: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        methods = options.get("methods", ["GET"])

        def decorator(view: Callable[..., Any]) -> Callable[..., Any]:
            access: RouteAccess | None = getattr(view, "route_access", None)
            if access is not None:
                if len(methods) != 1:
                    raise ValueError(f"{rule}: an authenticated route has one method, so one scope")
                access.settle(methods[0], self.write_scope)
                view._apidoc = access.apidoc(getattr(view, "_apidoc", {}))  # type: ignore[attr-defined]
            return super(ApiBlueprint, self).route(rule, parameters=parameters, tags=tags, **options)(view)

        return decorator


IDEMPOTENCY_KEY_PARAMETER = {
    "in": "header",
    "name": idempotency.HEADER,
    "required": False,
    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
    "description": "Any unique string (a UUID, say). A retry with the same key and the same request within 24 "
                   "hours answers what the first did (with `Idempotent-Replayed: true`) and changes nothing "
                   "again; the same key with a different request answers 422; while the first still runs, 409.",
}


def _error_doc(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


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
