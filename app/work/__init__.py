"""Work items of every kind: states, the write path, tenant scoping."""
