"""The blueprint every API resource uses: flask-smorest's, plus bearer-token protection."""
from __future__ import annotations

from typing import Any, Callable

import flask_smorest
import sqlalchemy as sa
from flask_jwt_extended import jwt_required
from flask_smorest import Page

from app.extensions import db

BEARER_SECURITY = [{"bearerAuth": []}]


class ApiBlueprint(flask_smorest.Blueprint):
    def authenticated(self, view: Callable[..., Any]) -> Callable[..., Any]:
        """Require a live access token (401 otherwise) and document it in the OpenAPI spec."""
        return self.doc(security=BEARER_SECURITY)(jwt_required()(view))


class SelectPage(Page):
    """flask-smorest pagination over a SQLAlchemy select: LIMIT/OFFSET and a COUNT, in SQL."""

    @property
    def items(self) -> list[Any]:
        stmt = self.collection.offset(self.page_params.first_item).limit(self.page_params.page_size)
        return list(db.session.scalars(stmt))

    @property
    def item_count(self) -> int:
        counted = sa.select(sa.func.count()).select_from(self.collection.order_by(None).subquery())
        return db.session.scalar(counted)
