"""Forms of the webhook admin pages."""
from flask_wtf import FlaskForm
from wtforms import SelectMultipleField, StringField, widgets
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length, Optional

from app.webhooks.services import EVENTS


class SubscriptionForm(FlaskForm):
    url = StringField("Endpoint URL", validators=[DataRequired(), Length(max=2000)],
                      description="Cleardesk POSTs signed JSON here.")
    description = StringField("Description", validators=[Optional(), Length(max=200)])
    events = SelectMultipleField(
        "Events", choices=[SelectChoice(k, f"{k} — {v}") for k, v in EVENTS.items()],
        default=["item.state_changed"], validators=[DataRequired()],
        widget=widgets.ListWidget(prefix_label=False), option_widget=widgets.CheckboxInput())


class ButtonForm(FlaskForm):
    """Pause, resume and redeliver: a CSRF token and nothing else."""
