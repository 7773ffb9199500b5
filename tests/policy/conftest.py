"""Policy fixtures: two admins of one tenant (four-eyes), and an active policy built through
the same services the admin pages use."""
from __future__ import annotations

import pytest

from app.extensions import db
from app.policy import versions
from app.unit_of_work import commit
from tests.conftest import actor


@pytest.fixture
def admins(make_tenant, make_user):
    tenant = make_tenant()
    author = make_user("author@example.com", [tenant], roles=("admin",), limit="0")
    checker = make_user("checker@example.com", [tenant], roles=("admin",), limit="0")
    return tenant, author, checker


@pytest.fixture
def make_policy(app):
    def make(tenant, author, checker, rules, **settings):
        """rules: (name, condition, outcome, steps text) tuples, or dicts of save_rule's
        keyword arguments, in priority order."""
        draft = versions.create_draft(actor(author), tenant.id)
        for rule in rules:
            if isinstance(rule, dict):
                versions.save_rule(actor(author), tenant.id, draft.id, rule_id=None, **rule)
                continue
            name, condition, outcome, steps = rule
            versions.save_rule(actor(author), tenant.id, draft.id, rule_id=None, name=name,
                               condition=condition, outcome=outcome, steps_text=steps,
                               queue="review" if outcome == "queue" else None)
        values = {"max_auto_amount": "", "daily_auto_count": "", "daily_auto_amount": "",
                  "qa_sample_pct": "0", "qa_role": "manager",
                  "fallback_steps_text": "approver >= amount", "risk": {"base": 0}}
        values.update(settings)
        versions.save_settings(actor(author), tenant.id, draft.id, **values)
        versions.submit_version(actor(author), tenant.id, draft.id)
        commit()
        versions.activate_version(actor(checker), tenant.id, draft.id)
        commit()
        db.session.refresh(draft)
        return draft

    return make
