"""The decision form of an email-link page; its CSRF token is checked like every form's."""
from flask_wtf import FlaskForm
from wtforms import HiddenField, StringField, TextAreaField
from wtforms.validators import AnyOf, Length

from app.auth.forms import PASSKEY_ANSWER_LENGTH


class LinkDecisionForm(FlaskForm):
    action = HiddenField(validators=[AnyOf(["approve", "reject"])])
    reason = TextAreaField("Reason", validators=[Length(max=5000)])
    # Above the step-up amount, a code of the approver's second factor.
    code = StringField("Code", validators=[Length(max=32)])
    # ... or a passkey's answer (app/static/passkeys.js).
    passkey = StringField("Passkey", validators=[Length(max=PASSKEY_ANSWER_LENGTH)])
