from flask_wtf import FlaskForm
from wtforms import EmailField, PasswordField, StringField
from wtforms.validators import DataRequired, Length, Optional


class LoginForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired(), Length(max=254)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=1024)])


class ForgotPasswordForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired(), Length(max=254)])


class CodeForm(FlaskForm):
    """A code of the second factor: six digits from the app, or a recovery code."""

    code = StringField("Code", validators=[DataRequired(), Length(max=32)])


# A WebAuthn answer, as the browser's JSON (a few KB; more is refused).
PASSKEY_ANSWER_LENGTH = 16_000


class PasskeyForm(FlaskForm):
    """A new passkey: its name, and the browser's answer to the registration options."""

    name = StringField("Name", validators=[DataRequired(), Length(max=60)])
    credential = StringField("Credential", validators=[DataRequired(),
                                                       Length(max=PASSKEY_ANSWER_LENGTH)])


class PasskeySignInForm(FlaskForm):
    """A sign-in with a passkey alone: the browser's answer."""

    passkey = StringField("Passkey", validators=[DataRequired(),
                                                 Length(max=PASSKEY_ANSWER_LENGTH)])


class SecondStepForm(FlaskForm):
    """The second factor at sign-in or step-up: a code, or a passkey's answer."""

    code = StringField("Code", validators=[Optional(), Length(max=32)])
    passkey = StringField("Passkey", validators=[Optional(), Length(max=PASSKEY_ANSWER_LENGTH)])

    def validate(self, extra_validators=None) -> bool:
        if not super().validate(extra_validators):
            return False
        if not (self.code.data or "").strip() and not self.passkey.data:
            self.code.errors = ["Enter a code, or use your passkey."]
            return False
        return True


class EmptyForm(FlaskForm):
    """A form with only the CSRF token, for buttons that post."""
