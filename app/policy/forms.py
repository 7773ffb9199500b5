"""Forms of the policy admin pages."""
from __future__ import annotations

import re

from flask_wtf import FlaskForm
from wtforms import HiddenField, IntegerField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length, NumberRange, Optional

from app.auth.forms import PASSKEY_ANSWER_LENGTH
from app.errors import ValidationFailed
from app.models import Kind, Priority

OUTCOMES = [("auto_approve", "Auto-approve"), ("steps", "Approval steps"),
            ("queue", "Send to a team queue"), ("assign", "Assign to a person"),
            ("prioritize", "Only set the priority")]
RULE_KINDS = [("approval", "Approvals"), ("billing_exception", "Billing exceptions"),
              ("settlement_dispute", "Settlement disputes")]
# The outcome inputs the rule form shows for each kind (the service refuses the others).
RULE_INPUTS = {"approval": ("queue", "steps"),
               "billing_exception": ("queue", "assign_role", "set_priority"),
               "settlement_dispute": ("queue", "assign_role", "set_priority")}
RULE_FORM_ID = re.compile(r"new|r[0-9]{1,18}")
CASE_ROLES = ["analyst", "manager"]
STEP_ROLES = [("manager", "manager"), ("approver", "approver")]
RISK_NUMBERS = ("base", "per_10k", "per_discount_pct", "max_auto_risk")
RISK_POINTS = ("regions", "partner_types", "counterparty_risk")
SLA_KINDS = [k.value for k in Kind]
SLA_PRIORITIES = [p.value for p in Priority]


class RuleForm(FlaskForm):
    rule_id = HiddenField()
    kind = StringField("For", validators=[Optional(), Length(max=32)])
    name = StringField("Name", validators=[DataRequired(), Length(max=120)])
    condition = TextAreaField("Condition", validators=[DataRequired(), Length(max=2000)])
    # Plain strings (the service checks them): WTForms 3.3 deprecates tuple choices.
    outcome = StringField("Then", validators=[Length(max=16)])
    steps = TextAreaField("Steps (one per line: role >= limit, or a parallel or owner step)",
                          validators=[Length(max=1000)])
    queue = StringField("Queue", validators=[Optional(), Length(max=64)])
    set_priority = StringField("Set priority", validators=[Optional(), Length(max=10)])
    assign_role = StringField("Assign to", validators=[Optional(), Length(max=20)])


def rule_values_for_kind(data: dict, outcomes_by_kind: dict) -> dict:
    """The rule form's values once its kind is chosen: an unknown kind reads as approvals, and
    an outcome that does not fit the kind gives way to the kind's first one."""
    values = dict(data)
    if values.get("kind") not in outcomes_by_kind:
        values["kind"] = "approval"
    allowed = outcomes_by_kind[values["kind"]]
    if values.get("outcome") not in allowed:
        values["outcome"] = allowed[0]
    return values


class ConditionForm(FlaskForm):
    condition = TextAreaField(validators=[Length(max=2000)])
    kind = StringField(validators=[Optional(), Length(max=32)])


class StepsForm(FlaskForm):
    steps = TextAreaField(validators=[Length(max=1000)])


class SettingsForm(FlaskForm):
    max_auto_amount = StringField("Maximum auto-approved amount", validators=[Length(max=24)])
    daily_auto_count = StringField("Daily budget: items", validators=[Length(max=12)])
    daily_auto_amount = StringField("Daily budget: amount", validators=[Length(max=24)])
    qa_sample_pct = StringField("QA sample (% of would-be auto-approvals)",
                                validators=[Length(max=3)])
    qa_role = StringField("QA reviewer role", validators=[Length(max=20)])
    fallback_steps = TextAreaField("Fallback steps (no rule matched, or held back)",
                                   validators=[Length(max=1000)])
    expire_after_days = StringField("Expire undecided approvals after (days)",
                                    validators=[Length(max=5)])
    note = TextAreaField("Note", validators=[Length(max=2000)])


class SimulateForm(FlaskForm):
    class Meta:
        csrf = False  # a read-only GET

    days = IntegerField("Days", default=90, validators=[Optional(), NumberRange(1, 365)])


class ActivateForm(FlaskForm):
    effective_from = StringField("Effective from (tenant time; empty for now)",
                                 validators=[Length(max=20)])
    # A code of the admin's second factor (step-up), when they have one.
    code = StringField("Code", validators=[Length(max=32)])
    # Or a passkey's answer (app/static/passkeys.js).
    passkey = StringField("Passkey", validators=[Length(max=PASSKEY_ANSWER_LENGTH)])


class KillSwitchForm(FlaskForm):
    engage = HiddenField(validators=[DataRequired()])
    reason = StringField("Reason", validators=[Length(max=500)])


def parse_points(text: str, what: str) -> dict[str, str]:
    """"LATAM=15, APAC=5" -> {"LATAM": "15", "APAC": "5"}."""
    from decimal import Decimal, InvalidOperation

    out: dict[str, str] = {}
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        key, sep, value = (p.strip() for p in part.partition("="))
        try:
            points = Decimal(value)
        except InvalidOperation:
            points = None
        if not sep or not key or points is None or not points.is_finite():
            raise ValidationFailed("Some risk points are not valid.",
                                   {what: "write NAME=points, separated by commas"})
        out[key] = str(points)
    return out


def points_text(points: dict | None) -> str:
    return ", ".join(f"{k}={v}" for k, v in (points or {}).items())


def step_line(step: dict) -> str:
    """One step as the editor writes it (app.policy.versions.clean_steps reads it back)."""
    limit = f" >= {step['min_limit']}" if step.get("min_limit") not in (None, "0", "0.00") \
        or not (step.get("need") or step.get("field")) else ""
    if step.get("need"):
        who = f'group "{step["group"]}"' if step.get("group") else step["role"]
        if step.get("fallback"):
            who += f" else {step['fallback']}"
        tail = ", reject when quorum lost" if step.get("reject_when") == "quorum" else ""
        return f"{step['need']} of {who}{limit}{tail}"
    if step.get("field"):
        return f"owner {step['field']} else {step['role']}{limit}{escalation_line(step)}"
    return f"{step['role']}{limit}{escalation_line(step)}"


def escalation_line(step: dict) -> str:
    if not step.get("escalate_after"):
        return ""
    levels = " then ".join("manager" if level.get("to") == "manager"
                           else f'group "{level.get("group")}"'
                           for level in step.get("escalate_to") or ())
    return f", escalate after {step['escalate_after']} to {levels}"


def steps_text(steps: list | None) -> str:
    return "\n".join(step_line(s) for s in steps or [])
