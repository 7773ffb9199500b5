"""Email-link approvals: issuing a signed, single-use link for one step, saying what a link may
do now (read-only, for GET and HEAD), and deciding through it (the write path for a POST).

The link carries only a random nonce signed with SECRET_KEY; the row it names (by the nonce's
SHA-256) binds it to item, step, approver and the facts the approver decides on (a fingerprint
of amount, subtype, counterparty, title, details and evidence files): claiming, commenting or
reassigning the item leaves a link good, a changed fact supersedes it. Every rule of the browser
applies, because the decision goes through approve_step / reject_approval with an email-link
actor."""
from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal

from flask import current_app
from itsdangerous import BadSignature, URLSafeSerializer
from sqlalchemy import select, update

from app.actors import Actor, ActorType
from app.approvals.models import ApprovalLinkToken, RevokeReason
from app.approvals.services import (
    approve_step,
    check_can_decide,
    named_approver_id,
    reject_approval,
    step_progress,
)
from app.audit.services import record_event
from app.auth.passkeys import factor_methods
from app.auth.second_factor import FactorRefused, factor_required_in, verify_code
from app.errors import DomainError, NotFound, PermissionDenied, SegregationOfDuties
from app.extensions import db
from app.models import ApprovalStep, StepState, User, WorkItem
from app.types import utcnow
from app.work.attachments import attachment_hashes
from app.work.states import ApprovalState

_SALT = "cleardesk.approval-link.v1"


class LinkStatus:
    """What a link can do now; each refusal has its own page."""

    OK = "ok"
    TAMPERED = "tampered"
    EXPIRED = "expired"
    USED = "used"
    DECIDED = "decided"  # the step was decided another way
    QUORUM_MET = "quorum_met"  # a parallel step has the approvals it needs without this link
    REVOKED = "revoked"  # the item moved on (withdrawn, sent back, closed)
    SUPERSEDED = "superseded"  # the item changed after the link was sent
    NOT_PERMITTED = "not_permitted"
    SIGN_IN = "sign_in"  # above the step-up amount: sign in first
    WRONG_USER = "wrong_user"  # signed in, but not as the approver the link is for
    CODE = "code"  # above the step-up amount: the approver's second factor code was wrong
    ENROL = "enrol"  # above it, the tenant requires a factor and the approver has none

    REFUSALS = (TAMPERED, EXPIRED, USED, DECIDED, QUORUM_MET, REVOKED, SUPERSEDED, NOT_PERMITTED, SIGN_IN,
                WRONG_USER, CODE, ENROL)


@dataclass
class LinkView:
    status: str
    token: ApprovalLinkToken | None = None
    item: WorkItem | None = None
    step: ApprovalStep | None = None
    message: str | None = None
    step_up: bool = False  # above the step-up amount: a second factor code, or a sign-in
    factor: bool = False  # (step-up) the approver has a second factor: their code is asked
    totp: bool = False  # (step-up) ... an authenticator app: a code of it will do
    passkey: bool = False  # (step-up) ... a passkey: it will do
    on_behalf_of: User | None = None  # the out-of-office approver the link's user stands in for
    facts: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == LinkStatus.OK


class LinkRefused(DomainError):
    """A POST through a link that may not act; `view` says why, for the page."""

    status = 403

    def __init__(self, view: LinkView):
        super().__init__(view.message or view.status)
        self.view = view


def _serializer() -> URLSafeSerializer:
    return URLSafeSerializer(current_app.config["SECRET_KEY"], salt=_SALT)


def nonce_hash(nonce: str) -> str:
    return hashlib.sha256(nonce.encode("ascii")).hexdigest()


def link_url(token: str) -> str:
    return current_app.config["APP_BASE_URL"].rstrip("/") + "/a/" + token


def step_up_threshold(tenant=None) -> Decimal:
    """Above this amount (in magnitude) an email-link decision needs the approver's second
    factor (or, without one, a sign-in): the tenant's own amount, else the default."""
    if tenant is not None and tenant.step_up_amount is not None:
        return tenant.step_up_amount
    return Decimal(str(current_app.config["EMAIL_LINK_STEP_UP_ABOVE"]))


def decision_facts(item: WorkItem) -> str:
    """A fingerprint of what an approver decides on. Work on the item that leaves these alone
    (a claim, a comment, a reassignment) does not change it; an amended amount or detail, or
    an evidence file added, does. (Files enter only when there are any, so links issued before
    items had files keep their fingerprints.)"""
    facts = {"amount": str(item.amount), "currency": item.currency, "subtype": item.subtype,
             "counterparty": item.counterparty, "title": item.title,
             "details": item.details or {}}
    files = attachment_hashes(item.id)
    if files:
        facts["files"] = files
    return hashlib.sha256(json.dumps(facts, sort_keys=True, default=str).encode()).hexdigest()


def issue_link(item: WorkItem, step: ApprovalStep, recipient: User,
               purpose: str = "assignment") -> tuple[str, ApprovalLinkToken]:
    """A new link for `recipient` to decide `step` of `item` as it is now. Returns the signed
    token (to put in the mail, never to store) and its row. Never commits."""
    nonce = secrets.token_urlsafe(32)
    now = utcnow()
    row = ApprovalLinkToken(
        nonce_hash=nonce_hash(nonce), tenant_id=item.tenant_id, item_id=item.id,
        step_id=step.id, approver_id=recipient.id, item_version=item.version,
        facts_sha256=decision_facts(item), item_amount=item.amount, purpose=purpose,
        created_at=now,
        expires_at=now + timedelta(hours=current_app.config["EMAIL_LINK_TTL_HOURS"]),
    )
    db.session.add(row)
    db.session.flush()
    return _serializer().dumps(nonce), row


def _find(token: str) -> ApprovalLinkToken | None:
    try:
        nonce = _serializer().loads(token)
    except BadSignature:
        return None
    if not isinstance(nonce, str):
        return None
    return db.session.scalars(
        select(ApprovalLinkToken).where(ApprovalLinkToken.nonce_hash == nonce_hash(nonce))
    ).one_or_none()


def link_actor(row: ApprovalLinkToken, ip: str | None, user_agent: str | None) -> Actor:
    user = row.approver
    return Actor(ActorType.EMAIL_LINK, user=user, label=user.email, ip=ip,
                 user_agent=user_agent, extra={"link_id": row.id})


def _describe(user: User | None) -> str:
    return user.name if user else "someone"


def inspect_link(token: str, signed_in: User | None = None) -> LinkView:
    """What this link may do now. Reads only: safe for GET and HEAD, which mail scanners send
    to every link."""
    row = _find(token)
    if row is None:
        return LinkView(LinkStatus.TAMPERED)
    item, step = row.item, row.step
    view = LinkView(LinkStatus.OK, token=row, item=item, step=step,
                    step_up=abs(item.amount) > step_up_threshold(item.tenant))
    named = named_approver_id(step)
    if named is not None and named != row.approver_id:
        view.on_behalf_of = db.session.get(User, named)
    if row.used_at is not None:
        view.status = LinkStatus.USED
        view.facts = {"who": _describe(row.used_by), "when": row.used_at,
                      "action": row.used_action}
        return view
    if step.state != StepState.OPEN.value or item.state != ApprovalState.PENDING.value:
        if step.parallel and step.state == StepState.APPROVED.value:
            progress = step_progress(step)
            view.status = LinkStatus.QUORUM_MET
            view.facts = {"who": _describe(step.decided_by), "when": step.decided_at,
                          "approvals": progress["approvals"], "need": progress["need"],
                          "group": progress["who"]}
        elif step.state in (StepState.APPROVED.value, StepState.REJECTED.value):
            view.status = LinkStatus.DECIDED
            view.facts = {"who": _describe(step.decided_by), "when": step.decided_at,
                          "action": "approved" if step.state == StepState.APPROVED.value
                          else "rejected"}
        else:
            view.status = LinkStatus.REVOKED
            view.facts = {"state": item.state.replace("_", " "), "who": _describe(item.last_actor),
                          "when": item.last_action_at}
        return view
    if row.revoked_at is not None:
        view.status = (LinkStatus.SUPERSEDED if row.revoked_reason == RevokeReason.SUPERSEDED.value
                       else LinkStatus.REVOKED)
        view.facts = {"when": row.revoked_at, "state": item.state.replace("_", " "),
                      "was": row.item_amount, "now": item.amount}
        return view
    if utcnow() >= row.expires_at:
        view.status = LinkStatus.EXPIRED
        view.facts = {"when": row.expires_at}
        return view
    if (decision_facts(item) != row.facts_sha256 if row.facts_sha256
            else item.version != row.item_version):
        view.status = LinkStatus.SUPERSEDED
        view.facts = {"was": row.item_amount, "now": item.amount,
                      "who": _describe(item.last_actor), "when": item.last_action_at}
        return view
    refusal = _permission_refusal(row, item)
    if refusal:
        view.status = LinkStatus.NOT_PERMITTED
        view.message = refusal
        return view
    if view.step_up and signed_in is not None and signed_in.id != row.approver_id:
        view.status = LinkStatus.WRONG_USER
        view.facts = {"signed_in": signed_in, "approver": row.approver}
        return view
    if view.step_up:
        methods = factor_methods([row.approver_id])[row.approver_id]
        view.factor, view.totp, view.passkey = bool(methods), "totp" in methods, \
            "passkey" in methods
        if not view.factor and factor_required_in(row.approver, row.tenant_id):
            view.status = LinkStatus.ENROL
            view.facts = {"approver": row.approver}
    return view


def _permission_refusal(row: ApprovalLinkToken, item: WorkItem) -> str | None:
    """The browser's rules, asked of the link's approver as they stand today."""
    if not row.approver.active:
        return "Your Cleardesk account has been deactivated."
    try:
        check_can_decide(link_actor(row, None, None), item, "approve")
    except (PermissionDenied, SegregationOfDuties, NotFound) as refused:
        return refused.message if not isinstance(refused, NotFound) else (
            "You are no longer a member of this team.")
    return None


def decide_by_link(token: str, action: str, *, reason: str | None, signed_in: User | None,
                   ip: str | None, user_agent: str | None,
                   code: str | None = None, passkey: dict | None = None,
                   origin: str | None = None) -> tuple[LinkView, WorkItem]:
    """Approve or reject the link's step through the browser's write path, as the link's
    approver (an email-link actor with IP and user agent), and use the link up, all in the
    caller's transaction. Above the step-up amount, `code` must be a code of the approver's
    second factor, or `passkey` an answer of one of their passkeys made for the `origin` the
    request came to (or, when they have no factor, they must be signed in). Raises LinkRefused when
    the link may not act; never commits."""
    view = inspect_link(token, signed_in)
    if view.ok and view.step_up and not view.factor and signed_in is None:
        view.status = LinkStatus.SIGN_IN
    if not view.ok:
        raise LinkRefused(view)
    if action not in ("approve", "reject"):
        raise LinkRefused(LinkView(LinkStatus.TAMPERED))
    row = view.token
    actor = link_actor(row, ip, user_agent)
    if view.step_up and view.factor:
        # Checked before the link is used up: a wrong code leaves it working.
        try:
            verify_code(actor, row.approver, code or "", purpose="step_up_link",
                        tenant_id=row.tenant_id, passkey=passkey, origin=origin,
                        data={"item_id": row.item_id, "link_id": row.id})
        except FactorRefused as refused:
            view.status, view.message = LinkStatus.CODE, refused.message
            raise LinkRefused(view) from refused
    now = utcnow()
    # Used up first, so that the decision's revocation of the item's other links skips it; the
    # WHERE makes two POSTs of one link race for one row, and only one wins.
    taken = db.session.execute(
        update(ApprovalLinkToken)
        .where(ApprovalLinkToken.id == row.id, ApprovalLinkToken.used_at.is_(None),
               ApprovalLinkToken.revoked_at.is_(None))
        .values(used_at=now, used_by_id=row.approver_id, used_action=action)
        .execution_options(synchronize_session=False)
    ).rowcount
    if taken != 1:
        db.session.expire(row)
        raise LinkRefused(inspect_link(token, signed_in))
    # The version the facts were checked at (a link of before fingerprints: its own).
    version = view.item.version if row.facts_sha256 else row.item_version
    if action == "approve":
        item = approve_step(actor, row.item_id, expected_version=version)
    else:
        item = reject_approval(actor, row.item_id, reason=reason or "", expected_version=version)
    record_event(actor, "approval.link_used", tenant_id=row.tenant_id, item_id=row.item_id,
                 data={"link_id": row.id, "step": view.step.position, "action": action,
                       "step_up": view.step_up})
    db.session.expire(row)
    return view, item


def record_refusal(view: LinkView, ip: str | None, user_agent: str | None) -> None:
    """Audit a refused POST of a link we issued (a tampered one names no tenant and is not
    recorded), and mark a superseded link revoked so its row says why. Never commits."""
    row = view.token
    if row is None:
        return
    if view.status == LinkStatus.SUPERSEDED and row.revoked_at is None:
        row.revoked_at = utcnow()
        row.revoked_reason = RevokeReason.SUPERSEDED.value
    record_event(link_actor(row, ip, user_agent), "approval.link_refused",
                 tenant_id=row.tenant_id, item_id=row.item_id,
                 data={"link_id": row.id, "reason": view.status})
    if view.status == LinkStatus.CODE:
        # The failed check's own event went with the rolled-back decision: kept here.
        record_event(link_actor(row, ip, user_agent), "auth.factor_failed",
                     tenant_id=row.tenant_id,
                     data={"user_id": row.approver_id, "purpose": "step_up_link",
                           "item_id": row.item_id, "link_id": row.id})
