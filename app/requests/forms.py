"""The request form: what every approval request carries; the subtype's own fields are read
by name (kinds.SUBTYPE_FIELDS) since they differ per subtype."""
from flask_wtf import FlaskForm
from wtforms import HiddenField, SelectField, StringField, TextAreaField
from wtforms.validators import Length, Optional


class RequestForm(FlaskForm):
    request_key = HiddenField(validators=[Length(max=64)])
    tenant_id = SelectField("For", coerce=int, validate_choice=False)
    subtype = SelectField("What do you need approved?", validate_choice=False)
    title = StringField("Title", validators=[Optional(), Length(max=300)])
    counterparty = StringField("Customer or vendor", validators=[Length(max=200)])
    amount = StringField("Amount", validators=[Length(max=32)])
    reason = TextAreaField("Why", validators=[Length(max=5000)])
