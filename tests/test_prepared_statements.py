"""Server-side prepared statements: prepared once per connection, typed in and out, and the token
check that uses them keeps working across reconnects."""
from __future__ import annotations

import uuid
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from app.extensions import autocommit_engine, db
from app.models import User
from app.services.prepared_statements import PreparedStatement
from tests.support.accounts import signed_in, unique_email

ME = "/api/v1/users/me"

_BY_EMAIL_OR_ID = PreparedStatement(
    "test_user_by_email_or_id",
    # One name used twice must stay one parameter; the UUID bind must be typed.
    sa.select(User).where(
        sa.or_(
            User.email == sa.bindparam("email"),
            sa.func.lower(User.email) == sa.func.lower(sa.bindparam("email")),
            User.id == sa.bindparam("user_id"),
        )
    )
    .limit(1),  # a value the select carries itself
)


def _prepared_here() -> int:
    return db.session.scalar(
        sa.text("SELECT count(*) FROM pg_prepared_statements WHERE name = :name"), {"name": _BY_EMAIL_OR_ID.name}
    )


def test_a_statement_is_prepared_once_per_connection_and_loads_typed_rows(app_ctx):
    user = User(email=unique_email(), password_hash="x")
    db.session.add(user)
    db.session.commit()
    user_id, email, created_at = user.id, user.email, user.created_at

    connection = db.session.connection()
    _BY_EMAIL_OR_ID.prepare_on(connection)
    _BY_EMAIL_OR_ID.prepare_on(connection)  # a second PREPARE of the same name would fail
    assert _prepared_here() == 1

    db.session.expunge_all()
    by_email = sa.select(User).from_statement(_BY_EMAIL_OR_ID.statement)
    loaded = db.session.scalar(by_email, {"email": email.upper(), "user_id": uuid.uuid4()})
    assert loaded.id == user_id and loaded.created_at == created_at  # typed: a UUID and a datetime
    assert db.session.scalar(by_email, {"email": "", "user_id": user_id}).email == email


def test_the_token_check_prepares_again_on_fresh_connections(app, live_client):
    _, headers = signed_in(live_client)
    assert live_client.get(ME, headers=headers).status_code == 200
    # Every pooled connection is replaced: the statement must be prepared on the new ones.
    with app.app_context():
        autocommit_engine().dispose()
    assert live_client.get(ME, headers=headers).status_code == 200
    assert live_client.get(ME, headers=headers).status_code == 200


def test_constants_are_typed_and_a_released_statement_is_dropped_where_it_was_prepared(app_ctx):
    # A constant inserted as a smallint, a percent sign in a literal, a result computed from a bind.
    first = PreparedStatement("test_typed_constants", sa.select(
        (sa.cast(sa.literal(7), sa.SmallInteger) + sa.literal(0)).label("seven"),
        sa.literal_column("'100%'").label("share"),
        sa.func.coalesce(sa.bindparam("maybe", type_=sa.Integer), 3).label("fallback")))
    connection = db.session.connection()
    first.prepare_on(connection)
    assert db.session.execute(first.statement, {"maybe": None}).one() == (7, "100%", 3)

    first.release()
    second = PreparedStatement("test_after_release", sa.select(sa.literal(1).label("one")))
    second.prepare_on(connection)  # the connection drops what was released before it prepares more
    names = set(db.session.scalars(sa.text(
        "SELECT name FROM pg_prepared_statements WHERE name LIKE 'test\\_%'")))
    assert "test_typed_constants" not in names and "test_after_release" in names
    assert db.session.execute(second.statement).scalar() == 1


def test_constants_written_inline_leave_only_the_named_parameters_and_keep_their_types(app_ctx):
    flow_id, at = uuid.uuid4(), datetime(2026, 1, 2, 3, 4, 5, 678901)
    properties = sa.cast(sa.literal_column("""'{"it''s": {"value": 51}}'"""), JSONB)
    # A UNION's first branch types its columns: a constant there must keep its bind's type.
    statement = sa.union_all(
        sa.select(sa.literal(flow_id, sa.Uuid).label("flow"), sa.literal(at, sa.DateTime).label("at"),
                  sa.literal("it's 100%").label("text"), sa.cast(sa.literal(7), sa.SmallInteger).label("small"),
                  (properties[("it's", "value")].as_integer() >= sa.bindparam("least", type_=sa.Integer))
                  .label("enough"), sa.literal(None, sa.Uuid).label("none")),
        sa.select(sa.bindparam("other", type_=sa.Uuid), sa.literal(at, sa.DateTime), sa.literal("b"),
                  sa.cast(sa.literal(8), sa.SmallInteger), sa.literal(False), sa.literal(None, sa.Uuid)),
    )
    inline = PreparedStatement("test_constants_inline", statement, inline_constants=True)
    inline.prepare_on(db.session.connection())
    other = uuid.uuid4()
    rows = db.session.execute(inline.statement, {"least": 50, "other": other}).all()
    assert [tuple(row) for row in rows] == [(flow_id, at, "it's 100%", 7, True, None),
                                            (other, at, "b", 8, False, None)]
    assert db.session.scalar(sa.text("SELECT CAST(parameter_types AS text) FROM pg_prepared_statements "
                                     "WHERE name = 'test_constants_inline'")) in ("{integer,uuid}", "{uuid,integer}")


def test_a_list_of_values_in_a_statement_is_written_into_it(app_ctx):
    # PREPARE has no list parameter: `IN (...)` of values the statement carries is part of its text.
    listed = PreparedStatement("test_in_list", sa.select(sa.literal(2).in_([1, 2, 3]).label("listed"),
                                                         sa.bindparam("n", type_=sa.Integer).in_([4]).label("given")))
    listed.prepare_on(db.session.connection())
    assert tuple(db.session.execute(listed.statement, {"n": 4}).one()) == (True, True)
