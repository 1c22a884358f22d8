# python-worker: one worker process; configure it with the environment variables in the README.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# The locked dependencies first, each checked against its hash (requirements.txt, made by
# scripts/lock.sh), then the project itself without resolving anything again.
COPY requirements.txt pyproject.toml README.md ./
COPY src ./src
RUN pip install --require-hashes -r requirements.txt \
    && pip install --no-deps . \
    && useradd --system --uid 10001 --home-dir /var/lib/python-worker --create-home worker

USER worker
WORKDIR /var/lib/python-worker
ENV STATUS_OUTBOX_DIR=/var/lib/python-worker/outbox

CMD ["python-worker", "run"]
