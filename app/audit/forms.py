"""The auditor's search (a GET form, no CSRF: it changes nothing) and the export request."""
from flask_wtf import FlaskForm
from wtforms import DateField, IntegerField, StringField
from wtforms.validators import AnyOf, DataRequired, Length, NumberRange, Optional

from app.audit.models import ExportFormat
from app.audit.views import ACTOR_TYPES


class EventSearchForm(FlaskForm):
    class Meta:
        csrf = False

    tenant = IntegerField("Tenant", validators=[Optional()])
    item = IntegerField("Item", validators=[Optional(), NumberRange(min=1)])
    actor = StringField("Actor", validators=[Optional(), Length(max=254)])
    action = StringField("Action", validators=[Optional(), Length(max=64)])
    actor_type = StringField("Actor type", validators=[Optional(), AnyOf(ACTOR_TYPES)])
    date_from = DateField("From", validators=[Optional()])
    date_to = DateField("To", validators=[Optional()])
    before = IntegerField(validators=[Optional(), NumberRange(min=1)])


class ExportForm(FlaskForm):
    tenant = IntegerField(validators=[DataRequired()])
    format = StringField("Format", validators=[DataRequired(),
                                               AnyOf([f.value for f in ExportFormat])])
    date_from = DateField("From", validators=[Optional()])
    date_to = DateField("To", validators=[Optional()])
