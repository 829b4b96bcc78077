#!/usr/bin/env bash
# PostgreSQL and Redis (Debian packages) for the Celery stack: scripts/celery_stack.py, `make airflow-celery`
# and tests/stack/test_celery_stack.py. Idempotent and quiet. Only the programs are used: the stack runs its
# own instances on 127.0.0.1 in its own folders, so no system service is started (policy-rc.d forbids the
# packages' postinst to start theirs while they install).
set -euo pipefail
missing=()
for pkg in postgresql redis-server; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    export DEBIAN_FRONTEND=noninteractive
    policy=/usr/sbin/policy-rc.d
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod +x "$policy"
        trap 'rm -f "$policy"' EXIT
    fi
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
for tool in initdb postgres; do
    test -x "$pg_bin/$tool" || { echo "missing $pg_bin/$tool" >&2; exit 1; }
done
command -v redis-server >/dev/null || { echo "redis-server is missing" >&2; exit 1; }
echo "services: PostgreSQL in $pg_bin, $(redis-server --version | cut -d' ' -f1-3)"
