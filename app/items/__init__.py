"""The item page: everything about one item, and the forms that act on it."""
