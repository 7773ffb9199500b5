"""Role-aware work queues over every kind of work."""
