#!/bin/sh
# Container entrypoint: seed demo data on the first start (SEED_ON_START=true and no customers yet),
# then hand the process over to the server so it receives SIGTERM directly and drains.
set -eu

case "${SEED_ON_START:-false}" in
  true|1|yes)
    python /app/deploy/seed_if_empty.py
    ;;
esac

exec "$@"
