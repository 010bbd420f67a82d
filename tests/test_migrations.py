"""Migrations run forward from empty, back to nothing, and forward again; models agree with them."""
from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask_migrate import downgrade, upgrade
from sqlalchemy.engine import make_url

from app.extensions import db
from tests.conftest import SEED_TABLES, TEST_DATABASE_URL, make_app, recreate_database

_base = make_url(TEST_DATABASE_URL)
ROUND_TRIP_URL = _base.set(database=f"{_base.database}_migrations").render_as_string(hide_password=False)


def _tables(engine: sa.Engine) -> set[str]:
    return set(sa.inspect(engine).get_table_names())


def test_upgrade_downgrade_upgrade():
    recreate_database(ROUND_TRIP_URL)
    app = make_app(DATABASE_URL=ROUND_TRIP_URL)
    with app.app_context():
        upgrade()
        assert set(SEED_TABLES) <= _tables(db.engine)

        downgrade(revision="base")
        assert _tables(db.engine) <= {"alembic_version"}
        with db.engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM alembic_version").scalar() == 0

        upgrade()
        assert set(SEED_TABLES) <= _tables(db.engine)
        db.session.remove()
        db.engine.dispose()


def test_models_match_migrations(app):
    """Autogenerate finds nothing to do: the models describe exactly what the migrations built."""
    with app.app_context(), db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), db.metadata)
    assert diff == []
