import pytest

from app.extensions import db

SEEDED_ITEMS = 600


@pytest.fixture
def seeded(runner):
    """The demo data (through the bulk path: COPY on PostgreSQL)."""
    result = runner.invoke(args=["seed-demo", "--items", str(SEEDED_ITEMS)])
    assert result.exit_code == 0, result.output
    db.session.expire_all()
    return result
