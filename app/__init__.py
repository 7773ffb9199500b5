"""Cleardesk: the approvals and exceptions workbench for finance teams."""
from __future__ import annotations

import os

from sqlalchemy import event
from sqlalchemy.engine import Engine

from app.access import install_access
from app.config import load_config
from app.extensions import csrf, db, htmx, login_manager, migrate
from app.unit_of_work import App


def create_app(config: dict | None = None) -> App:
    app = App(__name__, instance_relative_config=True)
    os.makedirs(app.instance_path, exist_ok=True)
    app.config.update(load_config(app.instance_path, config))
    # Imported here, as every import of an app module below: this package's __init__ runs
    # whenever any app module is imported, so loading the models and blueprints at its top
    # would load the whole app for each (and tie every module to every other).
    from app.params import install_params

    install_params(app)  # before any route: it bounds every <int:...>

    db.init_app(app)
    migrate.init_app(app, db, directory=os.path.join(os.path.dirname(app.root_path), "migrations"))
    login_manager.init_app(app)
    csrf.init_app(app)
    htmx.init_app(app)

    # Every model must be imported before migrations or queries look at the metadata.
    from app import models  # noqa: F401
    from app.audit import models as audit_models  # noqa: F401
    from app.outbox import models as outbox_models  # noqa: F401
    from app.queues import models as queue_models  # noqa: F401
    from app.approvals import models as approval_models  # noqa: F401
    from app.work import mentions as mention_models  # noqa: F401
    from app.work import attachments as attachment_models  # noqa: F401
    from app.mail import models as mail_models  # noqa: F401
    from app.work import rollup_tables  # noqa: F401
    from app.work import rollups  # noqa: F401  (writes the ledger's rollup changes)
    from app.api import models as api_models  # noqa: F401
    from app.webhooks import models as webhook_models  # noqa: F401
    from app.imports import models as import_models  # noqa: F401
    from app.admin import models as admin_models  # noqa: F401
    from app.auth import models as auth_models  # noqa: F401
    from app.policy import models as policy_models  # noqa: F401
    from app.sla import models as sla_models  # noqa: F401
    # The modules owning outbox handlers register them when imported (`register_handler`):
    # loaded here, every process that builds the app (web, `flask worker`, the tests' workers)
    # has every topic's handlers.
    from app.policy import jobs as policy_jobs  # noqa: F401
    from app.webhooks import jobs as webhook_jobs, services as webhook_services  # noqa: F401
    from app.requests import notifications as request_notifications  # noqa: F401
    from app.approvals import notifications as approval_notifications  # noqa: F401
    from app.exceptions import notifications as exception_notifications  # noqa: F401
    from app.sla import notifications as sla_notifications  # noqa: F401
    from app.audit import jobs as audit_jobs  # noqa: F401
    from app.auditors import notifications as audit_notifications  # noqa: F401
    from app.imports import jobs as import_jobs  # noqa: F401
    from app.admin import jobs as admin_jobs, notifications as admin_notifications  # noqa: F401
    # The kinds register their actions with app.work.actions the same way.
    from app.approvals import services as approval_services  # noqa: F401
    from app.exceptions import services as exception_services  # noqa: F401
    if app.config.get("LEDGER_GUARD"):
        # Tests: a write of work items that did not come through the ledger is refused.
        from app.work.ledger import guard_engine

        with app.app_context():
            guard_engine(db.engine)

    from app.auditors import commands as audit_commands  # noqa: F401  (flask audit anchor)
    from app.auditors.routes import bp as audit_bp
    from app.auth.routes import bp as auth_bp
    from app.auth.session import install_login
    from app.items.routes import bp as items_bp
    from app.queues.routes import bp as queues_bp
    from app.web import install_web

    install_login(app)
    app.register_blueprint(auth_bp)
    app.register_blueprint(queues_bp)
    app.register_blueprint(items_bp)
    from app.requests.routes import bp as requests_bp

    app.register_blueprint(requests_bp)
    from app.approvals.routes import install_email_links
    from app.mail.routes import bp as mail_bp

    install_email_links(app)
    app.register_blueprint(mail_bp)
    app.register_blueprint(audit_bp)
    from app.dashboard.routes import bp as dashboard_bp

    app.register_blueprint(dashboard_bp)
    from app.admin.routes import account as account_bp
    from app.admin.routes import bp as admin_bp

    app.register_blueprint(admin_bp)
    app.register_blueprint(account_bp)
    from app.policy.routes import bp as policy_bp, legacy as policy_legacy_bp

    app.register_blueprint(policy_bp)
    app.register_blueprint(policy_legacy_bp)
    install_web(app)
    from app.api.routes import install_api

    install_api(app)
    from app.api.admin_routes import bp as api_admin_bp

    app.register_blueprint(api_admin_bp)
    from app.webhooks.routes import install_webhooks

    install_webhooks(app)
    from app.imports.routes import bp as imports_bp

    app.register_blueprint(imports_bp)

    from app.cli import register_cli

    register_cli(app)
    from app.dashboard.commands import dashboard_cli

    app.cli.add_command(dashboard_cli)

    from app.health import install_health

    install_health(app)

    install_access(app)  # last: every route is known now, and each must say who may use it
    return app


@event.listens_for(Engine, "connect")
def _sqlite_pragmas(dbapi_connection, connection_record):
    """SQLite: WAL so readers do not block the writer, a busy timeout because the web server
    and the workers write at the same time, and enforced foreign keys."""
    module = type(dbapi_connection).__module__
    if not module.startswith("sqlite3"):
        return
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=15000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
