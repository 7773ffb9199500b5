"""The decision form of an email-link page; its CSRF token is checked like every form's."""
from flask_wtf import FlaskForm
from wtforms import HiddenField, StringField, TextAreaField
from wtforms.validators import AnyOf, Length


class LinkDecisionForm(FlaskForm):
    action = HiddenField(validators=[AnyOf(["approve", "reject"])])
    reason = TextAreaField("Reason", validators=[Length(max=5000)])
    # Above the step-up amount, a code of the approver's second factor.
    code = StringField("Code", validators=[Length(max=32)])
