#!/usr/bin/env bash
# Development server: gunicorn on 127.0.0.1:8000 and the task workers (one for
# applies, one for the checks people start, as in deploy/systemd), helper in
# development mode (files under var/root). Ctrl+C stops them all.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python manage.py collectstatic --no-input -v 0
.venv/bin/python manage.py db_worker --interval 0.2 --queue-name default &
worker=$!
.venv/bin/python manage.py db_worker --interval 0.2 --queue-name checks &
checks_worker=$!
trap 'kill $worker $checks_worker 2>/dev/null' EXIT INT TERM
exec_gunicorn() {
  .venv/bin/gunicorn panel.wsgi:application --bind 127.0.0.1:8000 --workers 2 --access-logfile -
}
exec_gunicorn
