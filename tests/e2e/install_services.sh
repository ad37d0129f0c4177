#!/usr/bin/env bash
# The servers that the Celery topology of tests/e2e starts for itself: redis-server (the Celery broker) and
# PostgreSQL's server (the metadata database). When one is missing, it is installed from the system's packages
# (Debian's apt-get), as root, as CI runs. Without root or apt-get nothing is installed: the Celery topology is
# then skipped, and says why (except with CI=true, where it fails). The tests start their own servers on
# loopback, with their data in a temporary folder: no system service is started or used.
set -euo pipefail

postgres_found() {
    command -v initdb >/dev/null 2>&1 || compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null
}

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
postgres_found || missing+=(postgresql)
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    why=$([ "$(id -u)" -ne 0 ] && echo "not root" || echo "no apt-get")
    echo "tests/e2e: the Celery topology needs ${missing[*]}; not installing them (${why}), so its tests will be"
    echo "  skipped. To run them: install ${missing[*]} (Debian: sudo apt-get install ${missing[*]}), or run make test as root."
    exit 0
fi

echo "tests/e2e: installing ${missing[*]} from the system's packages (apt-get) for the Celery topology"
# No system service may start on install: the tests start their own servers, by PID (Docker images ship this).
created_policy=""
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    created_policy=yes
fi
trap 'if [ -n "$created_policy" ]; then rm -f /usr/sbin/policy-rc.d; fi' EXIT
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "tests/e2e: installed ${missing[*]}"
