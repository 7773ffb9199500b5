"""What every mail is rendered with: its template outside any request, the tenant's brand and
money as text (for the worker's mails and the email-link pages alike)."""
from __future__ import annotations

from flask import current_app

from app.models import Tenant
from app.types import money_text

DEFAULT_BRAND_COLOR = "#1f6feb"


def render_mail(template: str, **context) -> str:
    """Render a mail template outside any request: without the pages' context processors,
    which read the signed-in user."""
    return current_app.jinja_env.get_template(template).render(**context)


money = money_text  # an amount in the item's currency, as the mails name it


def brand(tenant: Tenant) -> dict:
    return {"name": tenant.display_name, "color": tenant.brand_color or DEFAULT_BRAND_COLOR}
