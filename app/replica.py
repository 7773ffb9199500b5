"""Reads that a PostgreSQL read replica may serve (DATABASE_REPLICA_URL): the manager
dashboard, audit search and audit exports. Only plain SELECTs go there; every write, lock and
raw statement stays on the primary, and without a replica everything reads the primary.
The replica may lag the primary by a moment: these are reports, never the basis of a
decision."""
from __future__ import annotations

from flask import Blueprint, request
from flask_sqlalchemy.session import Session as FlaskSession

REPLICA = "replica"


class RoutingSession(FlaskSession):
    """The app's session: while a request or job has asked for the replica, its SELECTs are
    read there."""

    def get_bind(self, mapper=None, clause=None, bind=None, **kwargs):
        if (bind is None and self.info.get(REPLICA) and clause is not None
                and getattr(clause, "is_select", False)
                and getattr(clause, "_for_update_arg", None) is None):
            replica = self._db.engines.get(REPLICA)
            if replica is not None:
                return replica
        return super().get_bind(mapper=mapper, clause=clause, bind=bind, **kwargs)


def read_from_replica(bp: Blueprint) -> None:
    """The blueprint's GET pages read from the replica (its POSTs write on the primary)."""
    # Imported here: app.extensions imports this module (the session class).
    from app.extensions import db

    @bp.before_request
    def _to_replica():
        if request.method in ("GET", "HEAD"):
            db.session.info[REPLICA] = True

    @bp.teardown_request
    def _back_to_primary(_error=None):
        db.session.info.pop(REPLICA, None)


def replica_engine():
    """The engine that reports read: the replica's, or the primary's when there is none."""
    # Imported here: app.extensions imports this module (the session class).
    from app.extensions import db

    return db.engines.get(REPLICA) or db.engine
