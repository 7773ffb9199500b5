"""The auditor's search (a GET form, no CSRF: it changes nothing) and the export request."""
from flask_wtf import FlaskForm
from wtforms import StringField
from wtforms.validators import AnyOf, DataRequired, Length, Optional

from app.audit.models import ExportFormat
from app.auditors.queries import ACTOR_TYPES
from app.params import BigIdField, DayField, IdField, Storable


class EventSearchForm(FlaskForm):
    class Meta:
        csrf = False

    tenant = IdField("Tenant", validators=[Optional()])
    item = BigIdField("Item #", validators=[Optional()],
                      sentence="An item number is digits only, like 1042.")
    actor = StringField("Actor", validators=[Optional(), Length(max=254), Storable()])
    action = StringField("Action", validators=[Optional(), Length(max=64), Storable()])
    actor_type = StringField("Actor type", validators=[Optional(), AnyOf(ACTOR_TYPES)])
    date_from = DayField("From", validators=[Optional()])
    date_to = DayField("To", validators=[Optional()])
    before = BigIdField(validators=[Optional()])


class ExportForm(FlaskForm):
    tenant = IdField(validators=[DataRequired()])
    format = StringField("Format", validators=[DataRequired(),
                                               AnyOf([f.value for f in ExportFormat])])
    date_from = DayField("From", validators=[Optional()])
    date_to = DayField("To", validators=[Optional()])
