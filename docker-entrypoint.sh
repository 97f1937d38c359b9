#!/bin/sh
# Role dispatcher for the Karmchari image.
set -e
role="${1:-web}"
[ $# -gt 0 ] && shift
case "$role" in
  web)
    python manage.py migrate --noinput
    exec uvicorn karmchari_site.asgi:application --host 0.0.0.0 --port 8000 \
      --workers "${WEB_CONCURRENCY:-2}" --proxy-headers "$@"
    ;;
  worker)
    exec celery -A karmchari_site worker --loglevel "${LOG_LEVEL:-INFO}" "$@"
    ;;
  beat)
    exec celery -A karmchari_site beat --loglevel "${LOG_LEVEL:-INFO}" \
      --scheduler jobs.scheduler:JobScheduler --pidfile= "$@"
    ;;
  manage)
    exec python manage.py "$@"
    ;;
  *)
    exec "$role" "$@"
    ;;
esac
