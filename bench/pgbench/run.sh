#!/usr/bin/env bash
# Measures the per-request session lookup with pgbench against a throwaway database `auth_bench`.
#
#   bash bench/pgbench/run.sh            # from the repository root (or from anywhere)
#
# Environment: PGURL (default postgres://postgres@127.0.0.1:5432), DURATION seconds per run
# (default 15), ROUNDS (default 3), CLIENTS (default 2), PGBENCH (default pgbench),
# WAIT_RUSTC=1 to wait (up to 10 minutes) before each round while rustc is running.
#
# Scripts: baseline.sql (one-row primary-key lookup), hot.sql (the crate's per-request query,
# permissions read from auth_users.permissions), union.sql (same query computing permissions
# from the grant tables on every request), can.sql (CurrentUser::can's scoped-grant check,
# among 100,000 scoped grants, 1,000 for the user asked about). The first three pick the
# session id the same way.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
migrations="$here/../../migrations/postgres"
PGURL="${PGURL:-postgres://postgres@127.0.0.1:5432}"
DURATION="${DURATION:-15}"
ROUNDS="${ROUNDS:-3}"
CLIENTS="${CLIENTS:-2}"
PGBENCH="${PGBENCH:-pgbench}"
WAIT_RUSTC="${WAIT_RUSTC:-0}"
DB=auth_bench

# Replace (or add) the database name in a postgres:// URL, keeping any ?query part.
with_db() {
    local url="$1" db="$2" query="" scheme rest
    if [[ "$url" == *\?* ]]; then query="?${url#*\?}"; url="${url%%\?*}"; fi
    scheme="${url%%://*}://"; rest="${url#*://}"
    rest="${rest%%/*}"
    printf '%s%s/%s%s' "$scheme" "$rest" "$db" "$query"
}
ADMIN_URL="$(with_db "$PGURL" postgres)"
BENCH_URL="$(with_db "$PGURL" "$DB")"

cleanup() { psql "$ADMIN_URL" -qX -c "DROP DATABASE IF EXISTS $DB" >/dev/null 2>&1 || true; }
trap cleanup EXIT

echo "server: $(psql "$ADMIN_URL" -AtX -c 'SHOW server_version')"
psql "$ADMIN_URL" -qX -v ON_ERROR_STOP=1 -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB"
for migration in "$migrations"/*.sql; do
    psql "$BENCH_URL" -qX -v ON_ERROR_STOP=1 -f "$migration" >/dev/null
done
psql "$BENCH_URL" -qX -v ON_ERROR_STOP=1 -f "$here/seed.sql" >/dev/null
psql "$BENCH_URL" -AtX -v ON_ERROR_STOP=1 -c \
    "SELECT format('seeded: %s users, %s sessions, %s user_roles, %s user_permissions',
                   (SELECT count(*) FROM auth_users), (SELECT count(*) FROM auth_sessions),
                   (SELECT count(*) FROM auth_user_roles), (SELECT count(*) FROM auth_user_permissions))
         || format(', %s scoped grants, %s scoped roles',
                   (SELECT count(*) FROM auth_user_resource_permissions),
                   (SELECT count(*) FROM auth_user_resource_roles))"

wait_rustc() {
    [[ "$WAIT_RUSTC" == 1 ]] || return 0
    local i
    for i in $(seq 1 30); do
        pgrep -x rustc >/dev/null || return 0
        sleep 20
    done
    echo "warning: rustc still running, measuring under load" >&2
}

scripts=(baseline hot union can)
declare -A results
echo "command: $PGBENCH -h <host> -U <user> -n -M prepared -c $CLIENTS -j $CLIENTS -T $DURATION -f <script>.sql $DB"
for round in $(seq 1 "$ROUNDS"); do
    wait_rustc
    load="$(pgrep -xc rustc || true)"
    for s in "${scripts[@]}"; do
        out="$("$PGBENCH" -n -M prepared -c "$CLIENTS" -j "$CLIENTS" -T "$DURATION" \
                 -f "$here/$s.sql" "$BENCH_URL" 2>&1)" || { echo "$out" >&2; exit 1; }
        tps="$(sed -nE 's/^tps = ([0-9.]+).*/\1/p' <<<"$out" | head -n1)"
        results[$s]+="$tps "
        printf 'round %s  %-8s  tps %12s  (rustc processes at round start: %s)\n' \
            "$round" "$s" "$tps" "${load:-0}"
    done
done

median() { tr ' ' '\n' | sed '/^$/d' | sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
b="$(median <<<"${results[baseline]}")"
h="$(median <<<"${results[hot]}")"
u="$(median <<<"${results[union]}")"
c="$(median <<<"${results[can]}")"
printf 'median tps: baseline %s  hot %s  union %s  can %s\n' "$b" "$h" "$u" "$c"
awk -v b="$b" -v h="$h" -v u="$u" -v c="$c" 'BEGIN {
    printf "cost ratio baseline/hot   = %.3f (target <= 1.5)\n", b / h
    printf "cost ratio baseline/union = %.3f\n", b / u
    printf "cost ratio baseline/can   = %.3f\n", b / c
}'
