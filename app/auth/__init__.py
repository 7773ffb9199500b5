"""Sign-in, sign-out, and the session's choice of tenant."""
