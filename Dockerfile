# One image for every role: web (default), worker, beat.
#   docker run IMAGE                      -> web (uvicorn on :8000)
#   docker run IMAGE worker               -> celery worker
#   docker run IMAGE beat                 -> celery beat with the Karmchari scheduler
#   docker run IMAGE manage <command>     -> any manage.py command (migrate, ...)

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
COPY requirements.txt /tmp/requirements.txt
RUN python -m venv /venv && /venv/bin/pip install -r /tmp/requirements.txt

FROM python:3.11-slim
ENV PATH=/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DEBUG=0 \
    KARMCHARI_DATA_DIR=/data \
    STATIC_ROOT=/app/static
RUN useradd --system --create-home --uid 10001 karmchari \
    && mkdir /data && chown karmchari /data
COPY --from=build /venv /venv
WORKDIR /app
COPY --chown=karmchari . /app
# collectstatic needs settings to load; the key is a throwaway used only here.
RUN SECRET_KEY=build-only python manage.py collectstatic --noinput -v0
USER karmchari
EXPOSE 8000
ENTRYPOINT ["/app/docker-entrypoint.sh"]
CMD ["web"]
