"""Who is acting: every write-path function takes one of these explicitly."""
from __future__ import annotations

import enum
from dataclasses import dataclass, field

from app.models import User


class ActorType(str, enum.Enum):
    USER = "user"
    EMAIL_LINK = "email_link"
    POLICY = "policy"
    API = "api"
    SYSTEM = "system"


@dataclass(frozen=True)
class Actor:
    type: ActorType
    user: User | None = None
    label: str = ""
    ip: str | None = None
    user_agent: str | None = None
    # For an API token or the policy engine, the one tenant it may act in.
    tenant_id: int | None = None
    extra: dict = field(default_factory=dict)

    @classmethod
    def for_user(cls, user: User, ip: str | None = None, user_agent: str | None = None) -> Actor:
        return cls(ActorType.USER, user=user, label=user.email, ip=ip, user_agent=user_agent)

    @classmethod
    def system(cls, label: str = "system") -> Actor:
        return cls(ActorType.SYSTEM, label=label)

    @property
    def user_id(self) -> int | None:
        return self.user.id if self.user else None

    @property
    def acts_as_person(self) -> bool:
        """A signed-in user, or an API token relaying a named person's decision: the person's
        roles, limits and segregation of duties apply."""
        return self.user is not None and self.type in (ActorType.USER, ActorType.API)

    def tenant_ids(self) -> set[int]:
        """Tenants this actor may see; the one place tenant reach is decided."""
        if self.type is ActorType.API:  # a token reaches its own tenant, whoever it names
            return {self.tenant_id} if self.tenant_id is not None else set()
        if self.user is not None:
            return {m.tenant_id for m in self.user.memberships}
        if self.tenant_id is not None:
            return {self.tenant_id}
        return set()  # the system actor is not a member; scoped_items lets it reach any item

    def own_requests_only(self) -> set[int]:
        """Tenants where this person is only a requester: there they see their own requests,
        nothing else of the tenant (need-to-know). Empty for tokens, the policy, the system."""
        if self.type is not ActorType.USER or self.user is None:
            return set()
        return {m.tenant_id for m in self.user.memberships if m.role_set <= {"requester"}}

    def roles_in(self, tenant_id: int) -> set[str]:
        if self.user is None or tenant_id not in self.tenant_ids():
            return set()
        return self.user.roles_in(tenant_id)
