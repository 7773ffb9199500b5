"""The life of a policy version: drafts, their rules (the steps, risk and SLA targets cleaned
as they are saved) and settings, submission, four-eyes activation, withdrawal and discarding,
and the kill switch. Admins of the tenant only; every function takes its actor, writes its
audit events in the caller's transaction, and never commits."""
from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal

from sqlalchemy import func, or_, select

from app.actors import Actor, ActorType
from app.audit.services import record_event
from app.auth.second_factor import verify_code
from app.auth.services import has_second_factor
from app.errors import InvalidTransition, NotFound, PermissionDenied, ValidationFailed
from app.extensions import db
from app.models import (
    ApproverGroupMember,
    Kind,
    Membership,
    MembershipRole,
    Priority,
    Role,
    Tenant,
    User,
)
from app.policy import engine
from app.policy.evaluation import group_ids
from app.policy.models import (
    Outcome,
    PolicyKillSwitch,
    PolicyRule,
    PolicyState,
    PolicyVersion,
)
from app.policy.rules import KIND_WORDS, check_condition
from app.types import jsonable, utcnow
from app.work.kinds import parse_money

# ---------------------------------------------------------------------------------------------
# The life of a policy version. Admins of the tenant only; every step audited.


def require_policy_admin(actor: Actor, tenant_id: int) -> Tenant:
    if tenant_id not in actor.tenant_ids():
        raise NotFound("No such tenant.")
    tenant = db.session.get(Tenant, tenant_id)
    if tenant is None:
        raise NotFound("No such tenant.")
    if Role.ADMIN.value not in actor.roles_in(tenant_id):
        raise PermissionDenied(f"Only admins of {tenant.display_name} manage its policy.")
    return tenant


def get_version(actor: Actor, tenant_id: int, policy_id: int) -> PolicyVersion:
    require_policy_admin(actor, tenant_id)
    policy = db.session.get(PolicyVersion, policy_id)
    if policy is None or policy.tenant_id != tenant_id:
        raise NotFound("No such policy version.")
    return policy


def open_draft(tenant_id: int) -> PolicyVersion | None:
    return db.session.scalars(
        select(PolicyVersion).where(PolicyVersion.tenant_id == tenant_id,
                                    PolicyVersion.state.in_((PolicyState.DRAFT.value,
                                                             PolicyState.PENDING.value)))
        .order_by(PolicyVersion.version.desc()).limit(1)).first()


def latest_active(tenant_id: int) -> PolicyVersion | None:
    """The version in force now, else the newest scheduled one."""
    return PolicyVersion.in_force(tenant_id) or db.session.scalars(
        select(PolicyVersion).where(PolicyVersion.tenant_id == tenant_id,
                                    PolicyVersion.state == PolicyState.ACTIVE.value)
        .order_by(PolicyVersion.version.desc()).limit(1)).first()


DEFAULT_FALLBACK = [{"role": "approver", "min_limit": "amount"}]


def _copy_rules(source: PolicyVersion | None) -> list[PolicyRule]:
    if source is None:
        return []
    return [PolicyRule(position=r.position, kind=r.kind, name=r.name, condition=r.condition,
                       outcome=r.outcome, steps=list(r.steps or []), queue=r.queue,
                       set_priority=r.set_priority, assign_role=r.assign_role)
            for r in source.rules]


def create_draft(actor: Actor, tenant_id: int) -> PolicyVersion:
    """A new draft copied from the version in force (or an empty one); one open draft at a
    time per tenant."""
    require_policy_admin(actor, tenant_id)
    if open_draft(tenant_id) is not None:
        raise InvalidTransition("There is already a draft or a version waiting for approval.")
    source = latest_active(tenant_id)
    number = (db.session.scalar(select(func.max(PolicyVersion.version))
                                .where(PolicyVersion.tenant_id == tenant_id)) or 0) + 1
    draft = PolicyVersion(
        tenant_id=tenant_id, version=number, state=PolicyState.DRAFT.value,
        based_on_id=source.id if source else None, author_id=actor.user_id, created_at=utcnow(),
        max_auto_amount=source.max_auto_amount if source else Decimal("1000.00"),
        daily_auto_count=source.daily_auto_count if source else 200,
        daily_auto_amount=source.daily_auto_amount if source else Decimal("50000.00"),
        qa_sample_pct=source.qa_sample_pct if source else 5,
        qa_role=source.qa_role if source else Role.MANAGER.value,
        risk=dict(source.risk) if source else {"base": 10, "per_10k": 10, "max_auto_risk": 60},
        sla_targets=dict(source.sla_targets) if source else {},
        fallback_steps=list(source.fallback_steps) if source else list(DEFAULT_FALLBACK),
        expire_after_days=source.expire_after_days if source else None,
        rules=_copy_rules(source),
    )
    db.session.add(draft)
    db.session.flush()
    record_event(actor, "policy.draft_created", tenant_id=tenant_id,
                 data={"policy_id": draft.id, "version": number,
                       "based_on_version": source.version if source else None})
    return draft


def _editable(actor: Actor, tenant_id: int, policy_id: int) -> PolicyVersion:
    policy = get_version(actor, tenant_id, policy_id)
    if policy.state != PolicyState.DRAFT.value:
        raise InvalidTransition(f"Version {policy.version} is {policy.state}; only a draft "
                                "can be edited.")
    if policy.author_id != actor.user_id:
        # Whoever shaped a version may not activate it; so only its author shapes it.
        raise PermissionDenied("Only the author of a draft edits it; another admin reviews "
                               "and activates it.")
    return policy


STEP_ROLES = (Role.APPROVER.value, Role.MANAGER.value)


_LIMIT = r"(?:\s*>=\s*(?P<limit>\S.*))?"
_NEED = r"(?P<need>all|any|\d{1,3})\s+of\s+"
GROUP_STEP = re.compile(_NEED + r'group\s+"(?P<group>[^"]{1,80})"'
                        r"(?:\s+else\s+(?P<fallback>\w+))?" + _LIMIT + "$", re.I)
ROLE_QUORUM_STEP = re.compile(_NEED + r"(?P<role>\w+)" + _LIMIT + "$", re.I)
OWNER_STEP = re.compile(r"owner\s+(?P<field>\w+)\s+else\s+(?P<role>\w+)" + _LIMIT + "$", re.I)
REJECT_ON_QUORUM = ", reject when quorum lost"
ESCALATION = re.compile(r",\s*escalate\s+after\s+(?P<n>\d{1,3})\s+(?P<business>business\s+)?"
                        r"(?P<unit>hours?|days?)\s+to\s+(?P<levels>.+)$", re.I)
ESCALATION_LEVEL = re.compile(r'(?:(?P<manager>manager)|group\s+"(?P<group>[^"]{1,80})")'
                              r"(?:\s+then\s+|$)", re.I)
MAX_ESCALATION_LEVELS = 5
OWNER_FIELDS = ("account_owner_email", "cost_centre_owner_email", "budget_holder_email")
STEP_SYNTAX = ('write "role >= limit", "all of group \"Treasury\" >= 5000", '
               '"2 of group \"Regional controllers EMEA\"", "2 of manager >= 10000" or '
               '"owner account_owner_email else manager >= 1000"; a parallel step may end with '
               f'"{REJECT_ON_QUORUM}", a one-person step with ", escalate after 2 days to '
               'manager then group \"Treasury\""')


def clean_steps(text: str, groups: set[str] | None = None) -> list[dict]:
    """Steps written one per line: "role" or "role >= limit" (limit a number or amount); a
    parallel step "all|any|N of group \"Name\" [>= limit]" or "N of role [>= limit]", which
    may end with ", reject when quorum lost" (a member's rejection then rejects only once the
    quorum can no longer be met); an approver from the item "owner FIELD else role
    [>= limit]". `groups`: the tenant's group names (casefolded) to check names against."""
    steps, errors = [], []
    for n, line in enumerate((text or "").splitlines(), start=1):
        line = " ".join(line.split())
        if not line:
            continue
        try:
            steps.append(_clean_step(line, groups))
        except ValueError as problem:
            errors.append(f"line {n}: {problem}")
    if errors:
        raise ValidationFailed("Some steps are not valid.", {"steps": "; ".join(errors)})
    return steps


def check_steps(actor: Actor, tenant_id: int,
                text: str) -> tuple[str | None, list[str], list[str]]:
    """Live check of a steps text as an admin types it: the problems, or each step in words
    (with how many members a group has today), and warnings: a parallel step that fewer
    people may decide today than it needs (it would go to one person of its fallback role
    as it opens). Changes nothing."""
    # Imported here: the approvals package imports the policy's (its mails' item summary).
    from app.approvals.wording import step_words

    tenant = require_policy_admin(actor, tenant_id)
    try:
        steps = clean_steps(text, set(group_ids(tenant_id)))
    except ValidationFailed as failed:
        return failed.fields.get("steps", failed.message), [], []
    words, warnings = [], []
    for n, step in enumerate(steps, start=1):
        line = step_words(step, tenant.currency)
        if step.get("need"):
            size, eligible = parallel_capacity(tenant_id, step)
            if step.get("group"):
                line += f" ({size} member{'s' if size != 1 else ''} today"
                line += f", {eligible} of them may decide it)" if eligible != size else ")"
            needed = 1 if step["need"] == "any" else None if step["need"] == "all" \
                else int(step["need"])
            if eligible == 0 or (needed is not None and eligible < needed):
                who = f"“{step['group']}”" if step.get("group") else f"The {step['role']}s"
                fallback = step.get("fallback") or "manager"
                warnings.append(
                    f"Step {n}: {who} ha{'s' if step.get('group') else 've'} {eligible} "
                    f"{'member' if step.get('group') else 'holder'}{'s' if eligible != 1 else ''}"
                    f" who may decide it today: {step['need']} of them can never approve, so it "
                    f"will go to one {fallback} instead")
        words.append(line)
    return None, words, warnings


def parallel_capacity(tenant_id: int, step: dict) -> tuple[int, int]:
    """(members, members who may decide it) of a parallel policy step today: the group's
    members (or the role's holders), and those active, holding an approving role (the step's
    role, for a role's holders) with the step's limit (a limit of the item's amount is not
    known yet: any limit)."""
    # Imported here: the approvals package imports the policy's (its mails' item summary).
    from app.approvals.services import APPROVING_ROLES

    query = select(Membership).join(User, User.id == Membership.user_id).where(
        Membership.tenant_id == tenant_id)
    if step.get("group"):
        group_id = group_ids(tenant_id).get(step["group"].casefold())
        query = query.join(ApproverGroupMember,
                           ApproverGroupMember.user_id == Membership.user_id).where(
            ApproverGroupMember.group_id == group_id)
        roles = set(APPROVING_ROLES)
    else:
        query = query.join(MembershipRole, MembershipRole.membership_id == Membership.id).where(
            MembershipRole.role == step["role"])
        roles = {step["role"]}
    limit = Decimal(step["min_limit"]) if step.get("min_limit") not in (None, "amount") \
        else Decimal(0)
    members = db.session.scalars(query.limit(1000)).all()
    eligible = [m for m in members if m.user.active and m.role_set & roles
                and m.approval_limit >= limit]
    return len(members), len(eligible)


def _clean_limit(limit: str | None) -> str:
    limit = (limit or "").strip() or "0"
    if limit == "amount":
        return limit
    try:
        return str(parse_money(limit, "limit"))
    except ValidationFailed:
        raise ValueError("the limit must be a number or amount") from None


def _clean_escalation(match: re.Match, groups: set[str] | None) -> dict:
    """", escalate after N [business] hours|days to LEVEL [then LEVEL ...]": each level is
    "manager" (the manager of whoever has the step then) or group "Name"."""
    n = int(match["n"])
    unit = match["unit"].lower().rstrip("s")
    if not 1 <= n <= (90 if unit == "day" else 999):
        raise ValueError("escalate after 1 to 90 days, or 1 to 999 hours")
    after = f"{n} {'business ' if match['business'] else ''}{unit}{'s' if n != 1 else ''}"
    text, levels, at = match["levels"].strip(), [], 0
    while at < len(text):
        level = ESCALATION_LEVEL.match(text, at)
        if level is None:
            raise ValueError('escalate to manager, or to group "Name", joined by "then"')
        if level["manager"]:
            levels.append({"to": "manager"})
        else:
            name = level["group"].strip()
            if groups is not None and name.casefold() not in groups:
                raise ValueError(f"there is no approver group named “{name}” (create it under "
                                 "Approver groups first)")
            levels.append({"to": "group", "group": name})
        at = level.end()
    if not levels or len(levels) > MAX_ESCALATION_LEVELS:
        raise ValueError(f"escalate through 1 to {MAX_ESCALATION_LEVELS} levels")
    return {"escalate_after": after, "escalate_to": levels}


def _clean_step(line: str, groups: set[str] | None) -> dict:
    reject_when = None
    escalation = ESCALATION.search(line)
    if escalation:
        line = line[:escalation.start()].strip()
        escalate = _clean_escalation(escalation, groups)
        if GROUP_STEP.match(line) or ROLE_QUORUM_STEP.match(line):
            raise ValueError("only a one-person step escalates (a parallel step waits on its "
                             "members)")
        return {**_clean_step(line, groups), **escalate}
    if line.lower().endswith(REJECT_ON_QUORUM):
        line, reject_when = line[:-len(REJECT_ON_QUORUM)].strip(), "quorum"
    parallel = GROUP_STEP.match(line) or ROLE_QUORUM_STEP.match(line)
    if parallel:
        need = parallel["need"].lower()
        if need not in ("all", "any") and not 1 <= int(need) <= 50:
            raise ValueError("a parallel step needs between 1 and 50 approvals")
        step = {"role": Role.APPROVER.value, "min_limit": _clean_limit(parallel["limit"]),
                "need": str(int(need)) if need.isdigit() else need}
        if "group" in parallel.re.groupindex:
            name = parallel["group"].strip()
            if groups is not None and name.casefold() not in groups:
                raise ValueError(f"there is no approver group named “{name}” (create it under "
                                 "Approver groups first)")
            step["group"] = name
            if parallel["fallback"]:
                if parallel["fallback"] not in STEP_ROLES:
                    raise ValueError(f"the fallback role must be one of {', '.join(STEP_ROLES)}")
                step["fallback"] = parallel["fallback"]
        else:
            if parallel["role"] not in STEP_ROLES:
                raise ValueError(f"the role must be one of {', '.join(STEP_ROLES)}")
            step["role"] = parallel["role"]
        if reject_when:
            step["reject_when"] = reject_when
        return step
    if reject_when:
        raise ValueError(f"only a parallel step can end with “{REJECT_ON_QUORUM}”")
    owner = OWNER_STEP.match(line)
    if owner:
        if owner["field"] not in OWNER_FIELDS:
            raise ValueError(f"the owner field must be one of {', '.join(OWNER_FIELDS)}")
        if owner["role"] not in STEP_ROLES:
            raise ValueError(f"the fallback role must be one of {', '.join(STEP_ROLES)}")
        return {"role": owner["role"], "min_limit": _clean_limit(owner["limit"]),
                "field": owner["field"]}
    role, _, limit = (part.strip() for part in line.partition(">="))
    if role not in STEP_ROLES:
        raise ValueError(f"the role must be one of {', '.join(STEP_ROLES)}, or {STEP_SYNTAX}")
    return {"role": role, "min_limit": _clean_limit(limit)}


QUEUE_NAME = re.compile(r"^[^\W_][\w &.,()'+-]{0,47}$")
CASE_ROLES = (Role.ANALYST.value, Role.MANAGER.value)
OUTCOMES_BY_KIND = {
    Kind.APPROVAL.value: (Outcome.AUTO_APPROVE.value, Outcome.STEPS.value, Outcome.QUEUE.value),
    Kind.BILLING_EXCEPTION.value: (Outcome.QUEUE.value, Outcome.ASSIGN.value,
                                   Outcome.PRIORITIZE.value),
    Kind.SETTLEMENT_DISPUTE.value: (Outcome.QUEUE.value, Outcome.ASSIGN.value,
                                    Outcome.PRIORITIZE.value),
}


def clean_queue_name(queue: str | None) -> tuple[str | None, str | None]:
    """(the name, or an error): letters, digits, spaces and a little punctuation, at most 48
    characters; the QA sample's queue is the policy's own."""
    queue = " ".join((queue or "").split()) or None
    if queue is None:
        return None, "name the queue"
    if not QUEUE_NAME.match(queue):
        return None, ("letters, digits, spaces and - & . , ( ) ' + only, starting with a letter "
                      "or digit, at most 48 characters")
    if queue.casefold() == engine.QA_QUEUE.casefold():
        return None, f"“{engine.QA_QUEUE}” is the QA sample's own queue; choose another name"
    return queue, None


def _clean_rule(name: str, condition: str, outcome: str, steps_text: str,
                queue: str | None, kind: str = Kind.APPROVAL.value,
                set_priority: str | None = None, assign_role: str | None = None,
                groups: set[str] | None = None) -> dict:
    errors: dict[str, str] = {}
    kind = kind or Kind.APPROVAL.value
    if kind not in OUTCOMES_BY_KIND:
        raise ValidationFailed("Unknown kind of work.", {"kind": "unknown kind"})
    kind_words = KIND_WORDS[kind]
    name = (name or "").strip()
    if not name:
        errors["name"] = "is required"
    try:
        check_condition(condition, kind)
    except ValidationFailed as error:
        errors["condition"] = error.message
    allowed = OUTCOMES_BY_KIND[kind]
    if outcome == Outcome.AUTO_APPROVE.value and kind != Kind.APPROVAL.value:
        errors["outcome"] = (f"{kind_words.capitalize()} are never auto-approved: people "
                             "resolve them. Send them to a queue, assign them to a role or set "
                             "their priority.")
    elif outcome == Outcome.STEPS.value and kind != Kind.APPROVAL.value:
        errors["outcome"] = (f"Approval steps are for approvals; send {kind_words} to a queue "
                             "or assign them to a role.")
    elif outcome not in allowed:
        errors["outcome"] = "choose " + ", ".join(o.replace("_", "-") for o in allowed)
    steps: list[dict] = []
    if kind == Kind.APPROVAL.value:
        try:
            steps = clean_steps(steps_text, groups)
        except ValidationFailed as error:
            errors.update(error.fields)
    elif (steps_text or "").strip():
        errors["steps"] = f"approval steps are for approvals, not {kind_words}"
    if outcome == Outcome.STEPS.value and not steps and "steps" not in errors:
        errors["steps"] = "name at least one step"
    clean_queue = None
    if outcome == Outcome.QUEUE.value:
        clean_queue, problem = clean_queue_name(queue)
        if problem:
            errors["queue"] = problem
    set_priority = (set_priority or "").strip() or None
    if set_priority is not None:
        if kind == Kind.APPROVAL.value:
            errors["set_priority"] = "a rule sets the priority of exceptions and disputes only"
        elif set_priority not in {p.value for p in Priority}:
            errors["set_priority"] = "one of " + ", ".join(p.value for p in Priority)
    if outcome == Outcome.PRIORITIZE.value and set_priority is None \
            and "set_priority" not in errors:
        errors["set_priority"] = "choose the priority to set"
    assign_role = (assign_role or "").strip() or None
    if outcome == Outcome.ASSIGN.value and assign_role not in CASE_ROLES:
        errors["assign_role"] = f"one of {', '.join(CASE_ROLES)}"
    if errors:
        first = errors.get("condition") or errors.get("outcome") or "The rule is not valid."
        raise ValidationFailed(first, errors)
    return {"name": name[:120], "condition": condition.strip(), "outcome": outcome,
            "kind": kind,
            "steps": steps if outcome in (Outcome.STEPS.value, Outcome.QUEUE.value) else [],
            "queue": clean_queue,
            "set_priority": set_priority if kind != Kind.APPROVAL.value else None,
            "assign_role": assign_role if outcome == Outcome.ASSIGN.value else None}


def save_rule(actor: Actor, tenant_id: int, policy_id: int, *, rule_id: int | None,
              name: str, condition: str, outcome: str, steps_text: str = "",
              queue: str | None = None, kind: str = Kind.APPROVAL.value,
              set_priority: str | None = None, assign_role: str | None = None) -> PolicyRule:
    """Add a rule at the end of a draft, or change one. A rule decides one kind of work; an
    exception or a dispute is never auto-approved (refused here, with the reason)."""
    policy = _editable(actor, tenant_id, policy_id)
    fields = _clean_rule(name, condition, outcome, steps_text, queue, kind, set_priority,
                         assign_role, set(group_ids(tenant_id)))
    if rule_id is None:
        rule = PolicyRule(position=len(policy.rules) + 1, **fields)
        policy.rules.append(rule)
        before = None
    else:
        rule = next((r for r in policy.rules if r.id == rule_id), None)
        if rule is None:
            raise NotFound("No such rule.")
        before = _rule_dict(rule)
        for key, value in fields.items():
            setattr(rule, key, value)
    db.session.flush()
    record_event(actor, "policy.rule_saved", tenant_id=tenant_id,
                 data={"policy_id": policy.id, "version": policy.version,
                       "position": rule.position, "before": before, "after": _rule_dict(rule)})
    return rule


def delete_rule(actor: Actor, tenant_id: int, policy_id: int, rule_id: int) -> None:
    policy = _editable(actor, tenant_id, policy_id)
    rule = next((r for r in policy.rules if r.id == rule_id), None)
    if rule is None:
        raise NotFound("No such rule.")
    before = _rule_dict(rule)
    policy.rules.remove(rule)
    db.session.flush()
    _renumber(policy)
    record_event(actor, "policy.rule_deleted", tenant_id=tenant_id,
                 data={"policy_id": policy.id, "version": policy.version, "before": before})


def move_rule(actor: Actor, tenant_id: int, policy_id: int, rule_id: int, direction: int) -> None:
    """Move a rule one place up (-1) or down (+1) in the priority order."""
    policy = _editable(actor, tenant_id, policy_id)
    rules = list(policy.rules)
    index = next((n for n, r in enumerate(rules) if r.id == rule_id), None)
    if index is None:
        raise NotFound("No such rule.")
    other = index + (1 if direction > 0 else -1)
    if not 0 <= other < len(rules):
        return
    rules[index], rules[other] = rules[other], rules[index]
    for rule in rules:  # clear positions first: (policy_id, position) is unique
        rule.position = -rule.id
    db.session.flush()
    for n, rule in enumerate(rules, start=1):
        rule.position = n
    db.session.flush()
    db.session.expire(policy, ["rules"])
    record_event(actor, "policy.rule_moved", tenant_id=tenant_id,
                 data={"policy_id": policy.id, "version": policy.version,
                       "rule": rules[other].name, "to_position": other + 1})


def _renumber(policy: PolicyVersion) -> None:
    rules = sorted(policy.rules, key=lambda r: r.position)
    for rule in rules:
        rule.position = -rule.id
    db.session.flush()
    for n, rule in enumerate(rules, start=1):
        rule.position = n
    db.session.flush()


def _rule_dict(rule: PolicyRule) -> dict:
    return {"position": rule.position, "kind": rule.kind, "name": rule.name,
            "condition": rule.condition, "outcome": rule.outcome,
            "steps": list(rule.steps or []), "queue": rule.queue,
            "set_priority": rule.set_priority, "assign_role": rule.assign_role}


SETTINGS = ("max_auto_amount", "daily_auto_count", "daily_auto_amount", "qa_sample_pct",
            "qa_role", "risk", "sla_targets", "fallback_steps", "expire_after_days", "note")


def settings_dict(policy: PolicyVersion) -> dict:
    return {name: getattr(policy, name) for name in SETTINGS}


def save_settings(actor: Actor, tenant_id: int, policy_id: int, **values) -> PolicyVersion:
    """Guard rails, risk scoring, SLA targets and fallback steps of a draft."""
    policy = _editable(actor, tenant_id, policy_id)
    errors: dict[str, str] = {}
    clean: dict = {}
    for name in ("max_auto_amount", "daily_auto_amount"):
        raw = (values.get(name) or "").strip()
        if not raw:
            clean[name] = None
            continue
        try:
            clean[name] = parse_money(raw, name)
            if clean[name] < 0:
                errors[name] = "must be zero or more"
        except ValidationFailed:
            errors[name] = "must be an amount"
    numbers = [("daily_auto_count", 0, 10**9), ("qa_sample_pct", 0, 100)]
    if "expire_after_days" in values:
        numbers.append(("expire_after_days", 1, 3650))
    for name, low, high in numbers:
        raw = str(values.get(name) if values.get(name) is not None else "").strip()
        if not raw:
            clean[name] = 0 if name == "qa_sample_pct" else None
            continue
        try:
            clean[name] = int(raw)
            if not low <= clean[name] <= high:
                errors[name] = f"between {low} and {high}"
        except ValueError:
            errors[name] = "must be a whole number"
    qa_role = values.get("qa_role") or Role.MANAGER.value
    if qa_role not in STEP_ROLES:
        errors["qa_role"] = f"one of {', '.join(STEP_ROLES)}"
    clean["qa_role"] = qa_role
    try:
        clean["fallback_steps"] = clean_steps(values.get("fallback_steps_text") or "",
                                              set(group_ids(tenant_id)))
        if not clean["fallback_steps"]:
            errors["fallback_steps"] = "name at least one step"
    except ValidationFailed as error:
        errors["fallback_steps"] = error.fields.get("steps", "not valid")
    if "risk" in values:
        try:
            clean["risk"] = clean_risk(values["risk"])
        except ValidationFailed as error:
            errors.update(error.fields)
    if "sla_targets" in values:
        try:
            clean["sla_targets"] = clean_sla_targets(values["sla_targets"])
        except ValidationFailed as error:
            errors.update(error.fields)
    if errors:
        raise ValidationFailed("Some settings are not valid.", errors)
    before = _jsonable_settings(policy)
    for key, value in clean.items():
        setattr(policy, key, value)
    db.session.flush()
    record_event(actor, "policy.settings_saved", tenant_id=tenant_id,
                 data={"policy_id": policy.id, "version": policy.version, "before": before,
                       "after": _jsonable_settings(policy)})
    return policy


def _jsonable_settings(policy: PolicyVersion) -> dict:
    return jsonable(settings_dict(policy))


RISK_NUMBERS = ("base", "per_10k", "per_discount_pct", "max_auto_risk")
RISK_POINTS = ("regions", "partner_types", "counterparty_risk")


def clean_risk(risk: dict) -> dict:
    """Risk scoring inputs: numbers as exact strings, points per region, partner type and
    counterparty risk."""
    out: dict = {}
    for name in RISK_NUMBERS:
        raw = str((risk or {}).get(name) if (risk or {}).get(name) is not None else "").strip()
        if not raw:
            continue
        try:
            value = Decimal(raw)
            if not value.is_finite() or abs(value) > 1000:
                raise ValueError
        except (ValueError, ArithmeticError):
            raise ValidationFailed("Some risk inputs are not valid.",
                                   {f"risk_{name}": "a number between -1000 and 1000"}) from None
        out[name] = str(value)
    for name in RISK_POINTS:
        points = (risk or {}).get(name) or {}
        if points:
            out[name] = {str(k): str(Decimal(str(v))) for k, v in points.items()}
    return out


def clean_sla_targets(targets: dict) -> dict:
    """{kind: {priority: hours}} with known kinds and priorities and positive hours, kept as
    strings (exact, and fit for the audit trail)."""
    out: dict[str, dict[str, str]] = {}
    bad = []
    for kind, by_priority in (targets or {}).items():
        if kind not in {k.value for k in Kind} or not isinstance(by_priority, dict):
            bad.append(str(kind))
            continue
        for priority, hours in by_priority.items():
            if hours in (None, ""):
                continue
            try:
                value = Decimal(str(hours))
            except Exception:  # noqa: BLE001 - any unparsable text is refused below
                value = None
            if priority not in {p.value for p in Priority} or value is None or not (
                    Decimal("0") < value <= Decimal("2000")):
                bad.append(f"{kind} {priority}")
                continue
            out.setdefault(kind, {})[priority] = str(value)
    if bad:
        raise ValidationFailed("Some SLA targets are not valid.",
                               {"sla_targets": "hours between 0 and 2000 for: " + ", ".join(bad)})
    return out


def submit_version(actor: Actor, tenant_id: int, policy_id: int) -> PolicyVersion:
    policy = _editable(actor, tenant_id, policy_id)
    for rule in policy.rules:
        check_condition(rule.condition, rule.kind)  # still valid under today's field list
    policy.state = PolicyState.PENDING.value
    policy.submitted_at = utcnow()
    db.session.flush()
    record_event(actor, "policy.submitted", tenant_id=tenant_id,
                 data={"policy_id": policy.id, "version": policy.version})
    return policy


def withdraw_version(actor: Actor, tenant_id: int, policy_id: int) -> PolicyVersion:
    """Back to draft (its author or another admin), e.g. to change it after review."""
    policy = get_version(actor, tenant_id, policy_id)
    if policy.state != PolicyState.PENDING.value:
        raise InvalidTransition("Only a version waiting for approval can go back to draft.")
    policy.state = PolicyState.DRAFT.value
    policy.submitted_at = None
    db.session.flush()
    record_event(actor, "policy.returned_to_draft", tenant_id=tenant_id,
                 data={"policy_id": policy.id, "version": policy.version})
    return policy


def activate_version(actor: Actor, tenant_id: int, policy_id: int,
                     effective_from: datetime | None = None, *,
                     code: str | None = None, passkey: dict | None = None,
                     origin: str | None = None) -> PolicyVersion:
    """A second admin activates a submitted version from `effective_from` (now if None); the
    version it supersedes is retired at that moment. The author cannot: four-eyes. An admin
    with a second factor steps up with a `code` of it, or a `passkey` answer made for the
    `origin` the request came to (FactorRefused, already audited, when it is wrong: the
    caller commits that and nothing else has changed)."""
    policy = get_version(actor, tenant_id, policy_id)
    if policy.state != PolicyState.PENDING.value:
        raise InvalidTransition(f"Version {policy.version} is {policy.state}; submit it first.")
    if policy.author_id == actor.user_id:
        raise PermissionDenied("You wrote this version; another admin must activate it "
                               "(four-eyes).")
    if actor.type is ActorType.USER and actor.user is not None \
            and has_second_factor(actor.user):
        verify_code(actor, actor.user, code or "", purpose="step_up_policy",
                    tenant_id=tenant_id, passkey=passkey, origin=origin,
                    data={"policy_id": policy.id, "version": policy.version})
    now = utcnow()
    effective_from = effective_from or now
    if effective_from.tzinfo is None:
        raise ValidationFailed("Give the effective-from time with its timezone.",
                               {"effective_from": "needs a timezone"})
    if effective_from < now.replace(microsecond=0) and (now - effective_from).total_seconds() > 60:
        raise ValidationFailed("A version cannot take effect in the past.",
                               {"effective_from": "now or later"})
    effective_from = max(effective_from, now)
    superseded = db.session.scalars(
        select(PolicyVersion).where(
            PolicyVersion.tenant_id == tenant_id, PolicyVersion.id != policy.id,
            PolicyVersion.state == PolicyState.ACTIVE.value,
            or_(PolicyVersion.retired_at.is_(None),
                PolicyVersion.retired_at > effective_from))).all()
    for old in superseded:
        if old.effective_from >= effective_from:
            raise InvalidTransition(f"Version {old.version} takes effect later; "
                                    "choose a later effective-from time.")
        old.state = PolicyState.RETIRED.value
        old.retired_at = effective_from
    policy.state = PolicyState.ACTIVE.value
    policy.approver_id = actor.user_id
    policy.activated_at = now
    policy.effective_from = effective_from
    db.session.flush()
    record_event(actor, "policy.activated", tenant_id=tenant_id,
                 data={"policy_id": policy.id, "version": policy.version,
                       "author_id": policy.author_id, "effective_from": effective_from,
                       "retires": [o.version for o in superseded]})
    return policy


def discard_draft(actor: Actor, tenant_id: int, policy_id: int) -> None:
    policy = get_version(actor, tenant_id, policy_id)
    if policy.state not in (PolicyState.DRAFT.value, PolicyState.PENDING.value):
        raise InvalidTransition("Only a draft can be discarded.")
    version = policy.version
    db.session.delete(policy)
    db.session.flush()
    record_event(actor, "policy.draft_discarded", tenant_id=tenant_id,
                 data={"policy_id": policy_id, "version": version})


def set_kill_switch(actor: Actor, tenant_id: int, engaged: bool, reason: str = "") -> PolicyKillSwitch:
    """Stop (or resume) auto-approval in a tenant at once."""
    require_policy_admin(actor, tenant_id)
    reason = (reason or "").strip()
    if engaged and not reason:
        raise ValidationFailed("Say why auto-approval stops.", {"reason": "is required"})
    switch = db.session.get(PolicyKillSwitch, tenant_id)
    if switch is None:
        switch = PolicyKillSwitch(tenant_id=tenant_id, engaged=False)
        db.session.add(switch)
    if bool(switch.engaged) == engaged:
        return switch
    switch.engaged = engaged
    switch.reason = reason or None
    switch.changed_by_id = actor.user_id
    switch.changed_at = utcnow()
    db.session.flush()
    record_event(actor, "policy.kill_switch_engaged" if engaged else "policy.kill_switch_released",
                 tenant_id=tenant_id, comment=reason or None, data={"engaged": engaged})
    return switch

