"""The JSON API's request and response shapes. The same pydantic models validate every request
and generate the OpenAPI document (app.api.openapi), so the document cannot drift from what
the endpoints accept and answer."""
from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
)

from app.approvals.services import step_progress
from app.approvals.wording import step_account
from app.params import MAX_CURSOR, MONEY_PATTERN, check_money_text
from app.work.attachments import item_attachments
from app.work.kinds import RESOLUTION_CODES, SUBTYPES
from app.work.states import ACTION_ROLES


def _storable(value: str) -> str:
    """Text every database can store: no NUL character, no lone surrogate."""
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text") from None
    return value


def Text(max_length: int, min_length: int = 1):  # noqa: N802 - reads as a type
    return Annotated[str, StringConstraints(min_length=min_length, max_length=max_length),
                     AfterValidator(_storable)]


def _money_input(value):
    """A JSON string in the documented pattern, or a JSON number; never a boolean."""
    if isinstance(value, bool):
        raise ValueError("must be a number or a decimal string")
    if isinstance(value, str):
        check_money_text(value)
    return value


MoneyIn = Annotated[
    Decimal, BeforeValidator(_money_input),
    Field(max_digits=18, decimal_places=2, allow_inf_nan=False),
    WithJsonSchema({"anyOf": [{"type": "number"}, {"type": "string", "pattern": MONEY_PATTERN}],
                    "description": "An amount with no more decimals than the tenant's "
                                   "currency has (at most two); a JSON string (\"1250.00\") "
                                   "keeps it exact. An approval's amount is more than zero "
                                   "(money going out is a positive amount); other amounts are "
                                   "zero or more; none above the tenant's maximum."}),
]
MoneyOut = Annotated[str, Field(description="An exact decimal amount as a string, e.g. "
                                            "\"1250.00\".", examples=["1250.00"])]
KindName = Literal["approval", "billing_exception", "settlement_dispute"]
SubtypeName = Literal[tuple(sorted({s for subtypes in SUBTYPES.values() for s in subtypes}))]
PriorityName = Literal["low", "normal", "high", "urgent"]
# What a source system may do to an item: the kinds' actions, less the system's own `expire`.
API_ACTIONS = tuple(sorted({a for actions in ACTION_ROLES.values() for a in actions} - {"expire"}))
ActionName = Literal[API_ACTIONS]
DetailValue = Annotated[str, StringConstraints(max_length=2000), AfterValidator(_storable)] | int \
    | Annotated[float, Field(allow_inf_nan=False)] | None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ItemCreate(_Strict):
    """A piece of work from a source system. Posting the same (source_system, external_ref)
    again returns the item already made (200) instead of a second one (201)."""

    kind: KindName
    subtype: SubtypeName = Field(description="One of the subtypes of the kind.")
    title: Text(300)
    external_ref: Text(128) = Field(description="The source system's own reference; unique "
                                                "per tenant and source system.")
    source_system: Text(64)
    counterparty: Text(200)
    amount: MoneyIn
    currency: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")] | None = Field(
        default=None, description="Must be the tenant's currency when given.")
    region: Text(32) | None = None
    product_line: Text(64) | None = None
    partner_type: Text(32) | None = None
    priority: PriorityName = "normal"
    details: dict[Text(64), DetailValue] = Field(
        default_factory=dict, description="Kind-specific fields (e.g. invoice_number for a "
                                          "billing exception, period for a dispute).")
    amount_at_risk: MoneyIn | None = None
    claimed_amount: MoneyIn | None = None
    calculated_amount: MoneyIn | None = None
    requester_email: Annotated[str, StringConstraints(max_length=254,
                                                      pattern=r"^[^@\s]+@[^@\s]+$")] | None = Field(
        default=None, description="Who asked for this, an active member of the tenant: they "
                                  "are told of its outcome, answer questions about it, and "
                                  "may never approve it themselves.")


class VoteOut(BaseModel):
    member: str = Field(description="Email of the member whose vote this is.")
    decided_by: str = Field(description="Email of who cast it (a delegate stands in for an "
                                        "out-of-office member).")
    decision: Literal["approve", "reject"]
    decided_at: datetime


class StepOut(BaseModel):
    position: int
    role: str
    state: str
    decided_at: datetime | None
    approver: str | None = Field(None, description="Email of the person the step is reserved "
                                                   "for (an owner named by an item field).")
    source_field: str | None = Field(None, description="The item detail that named the "
                                                       "approver, for an owner step.")
    parallel: bool = Field(False, description="Decided by the votes of several members.")
    need: str | None = Field(None, description="A parallel step's rule: all, any, or a count.")
    quorum: int | None = Field(None, description="Approvals a parallel step needs.")
    members: list[str] = Field(default_factory=list,
                               description="Emails of a parallel step's members.")
    votes: list[VoteOut] = Field(default_factory=list)
    waiting_on: list[str] = Field(default_factory=list,
                                  description="Members who have not voted yet.")
    description: str = Field("", description="What the step needs and what became of it, in "
                                             "the words the item page uses.")
    escalation_level: int = Field(0, description="How many escalation levels the step has "
                                                 "gone up (0: still with its first approver).")
    escalates_at: datetime | None = Field(None, description="When the step escalates next if "
                                                            "nobody decides it.")


class AttachmentOut(BaseModel):
    """An evidence file on the item, as it was added (its SHA-256 is in its audit event)."""

    id: int
    file_name: str
    content_type: str = Field(description="The type its bytes were found to be, whatever "
                                          "the sender said.")
    size: int = Field(description="Bytes.")
    sha256: str
    added_by: str
    added_at: datetime


class ItemOut(BaseModel):
    id: int
    tenant: str = Field(description="The tenant's slug.")
    kind: KindName
    subtype: str
    title: str
    external_ref: str
    source_system: str
    counterparty: str
    region: str | None
    product_line: str | None
    partner_type: str | None
    amount: MoneyOut
    currency: str
    priority: str
    risk_score: int | None
    team_queue: str | None = Field(description="The team queue the tenant's policy routed it "
                                               "to, if any.")
    state: str
    sla_due_at: datetime | None
    sla_state: str | None
    created_at: datetime
    resolved_at: datetime | None
    version: int = Field(description="Send it back as expected_version to act only on what "
                                      "you saw.")
    details: dict[str, Any]
    amount_at_risk: MoneyOut | None
    claimed_amount: MoneyOut | None
    calculated_amount: MoneyOut | None
    adjustment_amount: MoneyOut | None
    resolution_code: str | None
    steps: list[StepOut]
    attachments: list[AttachmentOut] = Field(
        default_factory=list, description="Evidence files, in the order added; read them in "
                                          "Cleardesk.")


class ItemPage(BaseModel):
    items: list[ItemOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on "
                                                "the last page.")


class ItemQuery(_Strict):
    """Filters of GET /items (every one optional) and the page to read."""

    kind: KindName | None = None
    subtype: SubtypeName | None = None
    state: Text(32) | None = None
    source_system: Text(64) | None = None
    external_ref: Text(128) | None = None
    region: Text(32) | None = None
    min_amount: MoneyIn | None = None
    max_amount: MoneyIn | None = None
    sla: Literal["on_track", "at_risk", "breached", "met", "paused"] | None = None
    q: Text(100) | None = Field(default=None, description="Text in title, counterparty or "
                                                          "external reference.")
    sort: Literal["age", "sla", "amount"] = Field(
        default="age", description="age: oldest first; sla: due soonest first; amount: "
                                   "largest first.")
    limit: int = Field(default=50, ge=1, le=200)
    cursor: Text(MAX_CURSOR) | None = Field(
        default=None, description="The next_cursor of the page before.")


class EventQuery(_Strict):
    limit: int = Field(default=100, ge=1, le=500)
    cursor: Text(MAX_CURSOR) | None = Field(
        default=None, description="The next_cursor of the page before.")


class EventOut(BaseModel):
    seq: int
    occurred_at: datetime
    action: str
    actor_type: str
    actor: str
    from_state: str | None
    to_state: str | None
    comment: str | None
    data: dict[str, Any]


class EventPage(BaseModel):
    events: list[EventOut]
    next_cursor: str | None


class DecisionIn(_Strict):
    """A decision taken in a source system, relayed with the person who took it: their roles,
    approval limit and segregation of duties apply exactly as in the browser."""

    action: ActionName
    decided_by: Annotated[str, StringConstraints(min_length=3, max_length=254),
                          AfterValidator(_storable)] = Field(
        description="Email of the member of this tenant who decided.")
    comment: Text(5000) | None = None
    resolution_code: Literal[tuple(RESOLUTION_CODES)] | None = Field(
        default=None, description="Needed to resolve a billing exception.")
    adjustment_amount: MoneyIn | None = Field(
        default=None, description="Needed to partially accept a dispute.")
    expected_version: int | None = Field(default=None, ge=1, le=2**31 - 1)


class ResubmitIn(_Strict):
    """The source system's answer to an approver's question about an item it raised (one with
    no human requester): the item goes back to the step's approver and its SLA clock resumes."""

    answer: Text(5000)
    amount: MoneyIn | None = Field(
        default=None, description="A corrected amount, if the answer amends it (not above the "
                                  "amount asked about: a larger one is a new item).")
    expected_version: int | None = Field(default=None, ge=1, le=2**31 - 1)


class FieldError(BaseModel):
    field: str
    message: str


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str
    title: str
    status: int
    detail: str
    errors: list[FieldError] = Field(default_factory=list)


# --- webhook deliveries (documented under `webhooks` in the OpenAPI document) ---------------

class _WebhookEvent(BaseModel):
    delivery_id: str = Field(description="Stable across retries and redeliveries: "
                                         "de-duplicate on it (also in Cleardesk-Delivery).")
    occurred_at: datetime
    tenant: str = Field(description="The tenant's slug.")


class ItemCreatedData(BaseModel):
    item: ItemOut


class ItemCreatedEvent(_WebhookEvent):
    """An item arrived (the API, an import, a person). An import's items arrive as one
    event each."""

    event: Literal["item.created"]
    data: ItemCreatedData


class ItemStateChangedData(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    from_state: str = Field(alias="from")
    to: str
    action: str
    item: ItemOut


class ItemStateChangedEvent(_WebhookEvent):
    """An item changed state: every decision, approval and resolution."""

    event: Literal["item.state_changed"]
    data: ItemStateChangedData


class ItemStepApprovedData(BaseModel):
    step: int = Field(description="Position of the step approved (1 is the first).")
    role: str = Field(description="The role that step needed.")
    next_step: int = Field(description="Position of the step now open.")
    next_role: str
    item: ItemOut = Field(description="The item as it is when the delivery is made (just "
                                      "after the step, it is pending).")


class ItemStepApprovedEvent(_WebhookEvent):
    """A step of a multi-step approval was approved and the next step opened; the item stays
    pending (its final approval is an item.state_changed)."""

    event: Literal["item.step_approved"]
    data: ItemStepApprovedData


class ItemInfoRequestedData(BaseModel):
    question: str = Field(description="What the approver asked.")
    asked_by: int | None = Field(default=None, description="Id of the approver who asked.")
    item: ItemOut = Field(description="The item, waiting in info_requested.")


class ItemInfoRequestedEvent(_WebhookEvent):
    """An approver asked for information about an item. Answer with
    POST /api/v1/items/{id}/resubmit (items with a human requester are answered in Cleardesk
    by that person, who is mailed the question)."""

    event: Literal["item.info_requested"]
    data: ItemInfoRequestedData


WEBHOOK_EVENTS = {"item.created": ItemCreatedEvent, "item.state_changed": ItemStateChangedEvent,
                  "item.step_approved": ItemStepApprovedEvent,
                  "item.info_requested": ItemInfoRequestedEvent}


def _money(value) -> str | None:
    return None if value is None else f"{value:.2f}"


def item_json(item, attachments: list | None = None) -> dict:
    """An item as the API and the webhooks show it (validated against ItemOut). `attachments`:
    its files when the caller read many items' at once (app.work.attachments.attachments_of)."""
    if attachments is None:
        attachments = item_attachments(item.id)
    return ItemOut(
        id=item.id, tenant=item.tenant.slug, kind=item.kind, subtype=item.subtype,
        title=item.title, external_ref=item.external_ref, source_system=item.source_system,
        counterparty=item.counterparty, region=item.region, product_line=item.product_line,
        partner_type=item.partner_type, amount=_money(item.amount), currency=item.currency,
        priority=item.priority, risk_score=item.risk_score, team_queue=item.team_queue,
        state=item.state,
        sla_due_at=item.sla_due_at, sla_state=item.sla_state, created_at=item.created_at,
        resolved_at=item.resolved_at, version=item.version, details=item.details or {},
        amount_at_risk=_money(item.amount_at_risk), claimed_amount=_money(item.claimed_amount),
        calculated_amount=_money(item.calculated_amount),
        adjustment_amount=_money(item.adjustment_amount), resolution_code=item.resolution_code,
        steps=[step_json(s) for s in item.steps],
        attachments=[attachment_json(a) for a in attachments],
    ).model_dump(mode="json")


def step_json(step) -> StepOut:
    """A step with, for a parallel one, its members and their votes."""
    out = StepOut(position=step.position, role=step.role, state=step.state,
                  decided_at=step.decided_at,
                  approver=step.approver.email if step.approver_id and step.approver else None,
                  source_field=step.source_field)
    progress = step_progress(step)
    out.description = step_account(step.item, step, progress)
    out.escalation_level = step.escalation_level or 0
    out.escalates_at = step.escalates_at if step.state == "open" else None
    if progress is not None:
        out.parallel, out.need, out.quorum = True, step.need, progress["quorum"]
        out.members = [u.email for u in progress["members"]]
        out.waiting_on = [u.email for u in progress["waiting"]]
        out.votes = [VoteOut(member=v["member"].email, decided_by=v["decided_by"].email,
                             decision=v["decision"], decided_at=v["decided_at"])
                     for v in progress["votes"] if v["member"] and v["decided_by"]]
    return out


def attachment_json(row) -> dict:
    return AttachmentOut(id=row.id, file_name=row.file_name, content_type=row.content_type,
                         size=row.size, sha256=row.sha256, added_by=row.added_by_name,
                         added_at=row.created_at).model_dump(mode="json")
