from flask_wtf import FlaskForm
from wtforms import EmailField, PasswordField, StringField
from wtforms.validators import DataRequired, Length


class LoginForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired(), Length(max=254)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=1024)])


class ForgotPasswordForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired(), Length(max=254)])


class CodeForm(FlaskForm):
    """A code of the second factor: six digits from the app, or a recovery code."""

    code = StringField("Code", validators=[DataRequired(), Length(max=32)])


class EmptyForm(FlaskForm):
    """A form with only the CSRF token, for buttons that post."""
