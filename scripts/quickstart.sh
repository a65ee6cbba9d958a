#!/usr/bin/env bash
# One command on a fresh Debian/Ubuntu machine: install what is missing, then run Strata's quickstart.
#   bash scripts/quickstart.sh
# Installs PostgreSQL 15 server binaries when `dpkg -s postgresql-15` says they are missing (with sudo
# when not root), installs the npm dependencies, then runs `npx strata quickstart`: a broker, a
# safekeeper and a pageserver in the background (state in ./.strata), a tenant, a `main` timeline and a
# PostgreSQL 15 compute on it, left running until `npx strata stop`.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

if ! dpkg -s postgresql-15 >/dev/null 2>&1; then
  echo "==> installing PostgreSQL 15 (apt-get install postgresql-15 postgresql-contrib)"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql-15 postgresql-contrib
fi
if ! command -v node >/dev/null 2>&1; then
  echo "error: Node.js >= 20.19 is required (https://nodejs.org, or your distribution's nodejs package)" >&2
  exit 1
fi
echo "==> npm ci"
npm ci --no-audit --no-fund
echo "==> npx strata quickstart"
npx strata quickstart
