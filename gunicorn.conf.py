# gunicorn reads this file from the working directory by default (`make run` starts it there).
# Email-link tokens travel in the path (/a/<token>); this logger redacts them from the logs.
logger_class = "app.approvals.redaction.RedactingGunicornLogger"
