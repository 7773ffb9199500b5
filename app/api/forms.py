"""Forms of the API-token admin pages."""
from flask_wtf import FlaskForm
from wtforms import SelectMultipleField, StringField, widgets
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length

from app.api.tokens import SCOPES


class TokenForm(FlaskForm):
    name = StringField("Name", validators=[DataRequired(), Length(max=100)],
                       description="Which system uses it, e.g. “Billing export”.")
    scopes = SelectMultipleField(
        "Scopes", choices=[SelectChoice(k, f"{k} — {v}") for k, v in SCOPES.items()],
        default=["items:read", "items:write"], validators=[DataRequired()],
        widget=widgets.ListWidget(prefix_label=False), option_widget=widgets.CheckboxInput())


class RevokeForm(FlaskForm):
    pass
