"""Configuration read from the environment, with safe defaults for local use."""
import os
import secrets
import time
from pathlib import Path


class ConfigError(RuntimeError):
    pass


def _default_database_url(instance_path: str) -> str:
    return "sqlite:///" + str(Path(instance_path) / "cleardesk.sqlite3")


def load_config(instance_path: str, overrides: dict | None = None) -> dict:
    env = os.environ
    app_env = (overrides or {}).get("APP_ENV", env.get("APP_ENV", "development"))
    secret_key = env.get("SECRET_KEY")
    if not secret_key:
        if app_env == "production":
            raise ConfigError("SECRET_KEY must be set when APP_ENV=production")
        secret_key = _dev_secret_key(instance_path)
    config = {
        "APP_ENV": app_env,
        "SECRET_KEY": secret_key,
        "SQLALCHEMY_DATABASE_URI": env.get("DATABASE_URL") or _default_database_url(instance_path),
        # A read replica for the dashboard, audit search and exports (app.replica); optional.
        "DATABASE_REPLICA_URL": env.get("DATABASE_REPLICA_URL") or None,
        "REDIS_URL": env.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
        "RQ_QUEUE": env.get("RQ_QUEUE", "default"),
        # How `flask worker` runs a job: "simple" (in the worker's own process, each job in a
        # fresh app context: about 1 ms of overhead a job) or "fork" (a work-horse process per
        # job, RQ's default: about 23 ms a job). Either way a job whose worker was killed is
        # taken over within about a minute (see app/cli.py, JOB_HEARTBEAT_TTL).
        "WORKER_CLASS": env.get("WORKER_CLASS", "simple").strip().lower(),
        "SMTP_HOST": env.get("SMTP_HOST", "127.0.0.1"),
        "SMTP_PORT": int(env.get("SMTP_PORT", "8025")),
        "SMTP_USE_TLS": env.get("SMTP_USE_TLS", "").lower() in ("1", "true", "yes"),
        "SMTP_USERNAME": env.get("SMTP_USERNAME") or None,
        "SMTP_PASSWORD": env.get("SMTP_PASSWORD") or None,
        "SMTP_TIMEOUT": float(env.get("SMTP_TIMEOUT", "15")),
        "MAIL_FROM": env.get("MAIL_FROM", "cleardesk@localhost"),
        # The local mail sink's log (`make run` sets it): in development, the Sent mail page
        # shows the links of the mails it caught, and `flask mail last-link` prints the newest.
        "MAIL_SINK_LOG": env.get("MAIL_SINK_LOG") or None,
        # Email-link approvals: how long a link lives, the amount above which acting on one
        # needs a signed-in approver, when (as a fraction of the SLA window left) the one
        # reminder goes, and the local hour after which the daily digest goes.
        "EMAIL_LINK_TTL_HOURS": int(env.get("EMAIL_LINK_TTL_HOURS", "72")),
        "EMAIL_LINK_STEP_UP_ABOVE": env.get("EMAIL_LINK_STEP_UP_ABOVE", "100000"),
        "EMAIL_REMINDER_AT_SLA_LEFT": float(env.get("EMAIL_REMINDER_AT_SLA_LEFT", "0.5")),
        "EMAIL_DIGEST_ENABLED": env.get("EMAIL_DIGEST_ENABLED", "1").lower() in ("1", "true", "yes"),
        "EMAIL_DIGEST_HOUR": int(env.get("EMAIL_DIGEST_HOUR", "8")),
        "APP_BASE_URL": env.get("APP_BASE_URL", "http://127.0.0.1:5000"),
        # How long a mailed set-password link works: an invitation, a password reset.
        "INVITATION_TTL_HOURS": int(env.get("INVITATION_TTL_HOURS", "72")),
        "PASSWORD_RESET_TTL_HOURS": int(env.get("PASSWORD_RESET_TTL_HOURS", "2")),
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "SESSION_COOKIE_SECURE": app_env == "production",
        "REMEMBER_COOKIE_HTTPONLY": True,
        "REMEMBER_COOKIE_SAMESITE": "Lax",
        "REMEMBER_COOKIE_SECURE": app_env == "production",
        "WTF_CSRF_TIME_LIMIT": None,  # the token lives as long as the session
        "LOGIN_MAX_FAILURES": 5,
        "LOGIN_MAX_FAILURES_PER_IP": 50,
        "LOGIN_LOCKOUT_SECONDS": 15 * 60,
        # Forgot password: requests per address and per client address in the window.
        "RESET_MAX_PER_EMAIL": 3,
        "RESET_MAX_PER_IP": 20,
        "RESET_WINDOW_SECONDS": 60 * 60,
        "SQLALCHEMY_ENGINE_OPTIONS": {"pool_pre_ping": True},
        # JSON API and webhooks: requests a minute per token; the first retry delay (doubled
        # on each failure), attempts per delivery, failures in a row that pause a webhook.
        "API_RATE_LIMIT_PER_MINUTE": int(env.get("API_RATE_LIMIT_PER_MINUTE", "600")),
        "WEBHOOK_RETRY_BASE_SECONDS": float(env.get("WEBHOOK_RETRY_BASE_SECONDS", "30")),
        "WEBHOOK_MAX_ATTEMPTS": int(env.get("WEBHOOK_MAX_ATTEMPTS", "8")),
        "WEBHOOK_PAUSE_AFTER": int(env.get("WEBHOOK_PAUSE_AFTER", "10")),
        "WEBHOOK_TIMEOUT_SECONDS": float(env.get("WEBHOOK_TIMEOUT_SECONDS", "10")),
        # A delivery job goes on with its subscription's other due deliveries, over the same
        # connection, up to this many attempts or seconds.
        "WEBHOOK_BATCH_SIZE": int(env.get("WEBHOOK_BATCH_SIZE", "200")),
        "WEBHOOK_BATCH_SECONDS": float(env.get("WEBHOOK_BATCH_SECONDS", "30")),
        # Webhooks may go to loopback and private addresses: only for tests and local
        # receivers on this machine; off, a URL whose host is or resolves to one is refused
        # when saved and again when each delivery is made.
        "WEBHOOK_ALLOW_PRIVATE_TARGETS": env.get("WEBHOOK_ALLOW_PRIVATE_TARGETS", "").lower() in (
            "1", "true", "yes"),
        # Single sign-on: a tenant's identity provider must be https; http only for one on
        # this machine (127.0.0.1, localhost), and only when this is set (tests, a local
        # provider).
        "SSO_ALLOW_HTTP_ISSUER": env.get("SSO_ALLOW_HTTP_ISSUER", "").lower() in (
            "1", "true", "yes"),
        # Evidence files: the largest file, and the most files one change adds.
        "ATTACHMENT_MAX_BYTES": int(env.get("ATTACHMENT_MAX_BYTES", str(10 * 1024 * 1024))),
        "ATTACHMENTS_PER_CHANGE": int(env.get("ATTACHMENTS_PER_CHANGE", "5")),
        # CSV imports commit (and show progress) every this many rows.
        "IMPORT_BATCH_ROWS": int(env.get("IMPORT_BATCH_ROWS", "2000")),
        "OUTBOX_RELAY_ON_COMMIT": env.get("OUTBOX_RELAY_ON_COMMIT", "1").lower() in (
            "1", "true", "yes"),
    }
    # Tuning whose defaults live beside the code that uses them; set only when given.
    for name, cast in (("OUTBOX_BATCH_ITEMS", int), ("POLICY_SWEEP_BATCH", int),
                       ("POLICY_SWEEP_SECONDS", float), ("POLICY_SWEEP_LANES", int),
                       ("AUDIT_EXPORT_DIR", str)):
        if env.get(name):
            config[name] = cast(env[name])
    if overrides:
        config.update(overrides)
    if config.get("DATABASE_REPLICA_URL"):
        config["SQLALCHEMY_BINDS"] = {"replica": config["DATABASE_REPLICA_URL"]}
    if str(config["SQLALCHEMY_DATABASE_URI"]).startswith("postgresql"):
        # Short OLTP statements: PostgreSQL's JIT compiles any plan whose estimate passes
        # jit_above_cost, 15 ms spent to save microseconds on a read of a few dozen rows.
        options = dict(config["SQLALCHEMY_ENGINE_OPTIONS"])
        options["connect_args"] = {**options.get("connect_args", {}), "options": "-c jit=off"}
        config["SQLALCHEMY_ENGINE_OPTIONS"] = options
    return config


def _dev_secret_key(instance_path: str) -> str:
    """A per-checkout random key kept in instance/, so dev sessions survive restarts."""
    path = Path(instance_path) / "secret_key"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # O_EXCL: the web server and the workers start together; exactly one writes the key.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        for _ in range(50):
            key = path.read_text().strip()
            if key:
                return key
            time.sleep(0.01)
        raise ConfigError(f"{path} is empty; delete it to make a new one")
    key = secrets.token_hex(32)
    with os.fdopen(fd, "w") as f:
        f.write(key)
    return key
