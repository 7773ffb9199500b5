from app import create_app
from app.heap import settle_start_up_objects

app = create_app()
# The web and worker processes (gunicorn, `flask --app wsgi worker` and the other commands).
settle_start_up_objects()
