"""Administration of tenants, people, roles and limits."""
