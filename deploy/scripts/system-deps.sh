#!/usr/bin/env bash
# Installs the Debian packages the test-suite needs (PostgreSQL server, Chromium, docker-compose
# for validating deploy/compose.yaml) when missing.
# Needs root (CI and the dev machines run as root); otherwise prints what to install and goes on:
# the tests that need a missing package skip with a clear reason.
set -euo pipefail
need=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
# `docker compose config` validates deploy/compose.yaml without an engine (Debian's v1 client).
{ docker compose version || command -v docker-compose; } >/dev/null 2>&1 || need+=(docker-compose)
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" != 0 ]; then
  echo "system-deps: not root; install these Debian packages for the full test-suite: ${need[*]}" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
echo "system-deps: installed ${need[*]}"
