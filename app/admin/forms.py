"""The admin area's forms. They parse and bound the input; what makes a value valid (a real
time zone, a country with a holiday calendar, a readable colour) is checked in services.py, so
the same rules hold for every caller."""
from flask_wtf import FlaskForm
from flask_wtf.file import FileField
from wtforms import (
    BooleanField,
    EmailField,
    HiddenField,
    PasswordField,
    SelectField,
    SelectMultipleField,
    StringField,
)
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, InputRequired, Length, Optional
from wtforms.widgets import CheckboxInput, ListWidget

from app.models import Kind, Role
from app.params import DayField, IdField

WEEKDAYS = [SelectChoice(str(n), day) for n, day in
            enumerate(("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"), start=1)]
ROLE_CHOICES = [SelectChoice(r.value, r.value.title()) for r in Role]
KIND_CHOICES = [SelectChoice(k.value, k.label) for k in Kind]


def choices(pairs) -> list[SelectChoice]:
    return [SelectChoice(value, label) for value, label in pairs]


class CheckboxesField(SelectMultipleField):
    widget = ListWidget(prefix_label=False)
    option_widget = CheckboxInput()

    def pre_validate(self, form):  # unknown values are reported by the service, with a message
        pass


class TenantForm(FlaskForm):
    slug = StringField("Slug", validators=[Optional(), Length(max=63)])
    name = StringField("Name", validators=[Length(max=200)])
    currency = StringField("Currency", validators=[Length(max=8)])
    timezone = StringField("Time zone", validators=[Length(max=64)])
    calendar_country = SelectField("Public holidays of", validate_choice=False)
    working_days = CheckboxesField("Working days", choices=WEEKDAYS)
    work_start = StringField("Opens", validators=[Length(max=5)])
    work_end = StringField("Closes", validators=[Length(max=5)])
    max_item_amount = StringField("Largest amount per item", validators=[Length(max=32)])
    sla_reassign_on_breach = BooleanField("Move a breached item to the least-loaded colleague")


class SignInSettingsForm(FlaskForm):
    session_idle_minutes = StringField("End a session after this many idle minutes",
                                       validators=[Length(max=16)])
    session_max_hours = StringField("End a session this many hours after sign-in",
                                    validators=[Length(max=16)])
    require_second_factor = BooleanField(
        "Require a second factor of approvers, analysts, managers and admins")
    step_up_amount = StringField("Ask for the second factor on email-link decisions above",
                                 validators=[Length(max=32)])


class SingleSignOnForm(FlaskForm):
    enabled = BooleanField("Offer single sign-on to this tenant's people")
    issuer = StringField("Issuer URL", validators=[Length(max=500)])
    client_id = StringField("Client id", validators=[Length(max=255)])
    client_secret = PasswordField("Client secret", validators=[Length(max=500)])
    allowed_domains = StringField("Allowed email domains", validators=[Length(max=2000)])
    jit_enabled = BooleanField("Add people of these domains who have no account yet "
                               "(just-in-time membership)")
    jit_role = SelectField("Their role", validate_choice=False)
    password_sign_in_off = BooleanField("Password sign-in off: members must use single sign-on")


class BrandingForm(FlaskForm):
    brand_name = StringField("Display name", validators=[Length(max=200)])
    brand_color = StringField("Accent colour", validators=[Length(max=32)])
    logo = FileField("Logo")


class ClosureForm(FlaskForm):
    first_day = DayField("First day", validators=[InputRequired("a date is required")])
    last_day = DayField("Last day", validators=[Optional()])
    reason = StringField("Reason", validators=[Length(max=200)])


class GroupForm(FlaskForm):
    name = StringField("Name", validators=[Length(max=80)])
    members = CheckboxesField("Members", coerce=int)


class PersonForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired("is required"), Length(max=254)])
    name = StringField("Name", validators=[Length(max=200)])
    roles = CheckboxesField("Roles", choices=ROLE_CHOICES)
    approval_limit = StringField("Approval limit", validators=[Length(max=32)])


class MembershipForm(FlaskForm):
    roles = CheckboxesField("Roles", choices=ROLE_CHOICES)
    approval_limit = StringField("Approval limit", validators=[Length(max=32)])


class DelegationForm(FlaskForm):
    tenant_id = HiddenField()
    delegate_id = IdField("Who stands in", validators=[Optional()])
    first_day = DayField("From", validators=[Optional()])
    last_day = DayField("Until", validators=[Optional()])
    kinds = CheckboxesField("Only for", choices=KIND_CHOICES)
    max_amount = StringField("Only up to", validators=[Length(max=32)])


class ManagerForm(FlaskForm):
    manager_id = IdField("Reports to", validators=[Optional()])


class SetPasswordForm(FlaskForm):
    password = PasswordField("New password", validators=[DataRequired("is required"),
                                                          Length(max=1024)])
    confirm = PasswordField("The same again", validators=[DataRequired("is required"),
                                                           Length(max=1024)])
