#!/usr/bin/env bash
# Make sure the PostgreSQL the tests use (127.0.0.1:5432, trust auth, database `test`)
# is up: start the installed cluster when it is down (CI machines), create `test` when
# it is missing. Exits non-zero, saying why, when PostgreSQL is installed but cannot be
# started or reached, or when it is absent and BATCHD_TEST_REQUIRE asks for it (pg or
# all: .ci/run sets it). Without that switch an absent PostgreSQL only warns: its tests
# skip, saying so.
set -euo pipefail

HOST=127.0.0.1
PORT=5432
URL="postgresql://postgres@$HOST:$PORT"

required() { case ",${BATCHD_TEST_REQUIRE:-}," in *,pg,* | *,all,*) return 0 ;; *) return 1 ;; esac; }

absent() {
  if required; then
    echo "services: $1; BATCHD_TEST_REQUIRE needs PostgreSQL (apt-get install postgresql)" >&2
    exit 1
  fi
  echo "services: $1; the PostgreSQL tests will skip" >&2
  exit 0
}

up() { pg_isready -h "$HOST" -p "$PORT" -q; }

command -v pg_isready >/dev/null 2>&1 || absent "PostgreSQL is not installed (no pg_isready)"

if ! up; then
  command -v pg_lsclusters >/dev/null 2>&1 ||
    absent "PostgreSQL is not running on $HOST:$PORT and there is no pg_lsclusters to start it"
  # `pg_lsclusters` rows: version, cluster, port, status, owner, data dir, log file.
  cluster=$(pg_lsclusters --no-header | awk -v port="$PORT" '$3 == port { print $1 " " $2; exit }')
  [ -n "$cluster" ] || absent "no PostgreSQL cluster is configured on port $PORT"
  echo "services: starting PostgreSQL cluster $cluster"
  # shellcheck disable=SC2086  # "version name", two words on purpose
  if ! pg_ctlcluster --skip-systemctl-redirect $cluster start; then
    echo "services: could not start PostgreSQL cluster $cluster (see its log in pg_lsclusters)" >&2
    exit 1
  fi
  for _ in $(seq 1 60); do
    up && break
    sleep 0.5
  done
  if ! up; then
    echo "services: PostgreSQL cluster $cluster started but $HOST:$PORT is not accepting connections" >&2
    exit 1
  fi
fi

if ! exists=$(psql "$URL/postgres" -tAc "SELECT 1 FROM pg_database WHERE datname = 'test'" 2>&1); then
  echo "services: PostgreSQL is up but $URL/postgres refuses the tests' connection" \
    "(they need trust auth for postgres on $HOST): $exists" >&2
  exit 1
fi
if [ "$exists" != "1" ]; then
  echo "services: creating database test"
  psql "$URL/postgres" -qc "CREATE DATABASE test"
fi
echo "services: PostgreSQL ready at $URL/test"
