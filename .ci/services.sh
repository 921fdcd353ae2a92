#!/usr/bin/env bash
# Make sure PostgreSQL and RabbitMQ answer on localhost: install them if missing (Debian, as root),
# start them if stopped, and wait until they accept connections. Safe to run any number of times.
set -euo pipefail

pg_up() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
amqp_up() { (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; }
wait_for() {  # name, check function, seconds
  for _ in $(seq 1 "$3"); do "$2" && return 0; sleep 1; done
  echo "services: $1 did not come up within $3 s" >&2; return 1
}

installed_pg=0
if ! command -v pg_ctlcluster >/dev/null 2>&1 || ! command -v rabbitmq-server >/dev/null 2>&1; then
  echo "services: installing PostgreSQL and RabbitMQ (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  command -v pg_ctlcluster >/dev/null 2>&1 || installed_pg=1
  apt-get update -qq
  apt-get install -y -qq postgresql rabbitmq-server >/dev/null
fi

if ! pg_up; then
  echo "services: starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -n1)" main start || true
  wait_for PostgreSQL pg_up 60
fi
# The engine's defaults and tests connect as postgres over 127.0.0.1 without a password. A cluster
# this script just installed asks for one: give it trust auth on loopback, as on our machines. A
# cluster that was already there is left as it is.
if ! psql -h 127.0.0.1 -U postgres -d postgres -tAc 'select 1' >/dev/null 2>&1; then
  if [ "$installed_pg" = 1 ]; then
    hba=$(ls /etc/postgresql/*/main/pg_hba.conf | sort -V | tail -n1)
    sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -n1)" main reload
    wait_for "PostgreSQL trust auth" pg_up 30
  else
    echo "services: PostgreSQL does not accept user postgres on 127.0.0.1 without a password;" \
         "set ENGINE_DATABASE_URL / TEST_PG_URL to credentials that work" >&2
  fi
fi

if ! amqp_up; then
  echo "services: starting RabbitMQ"
  rabbitmq-server -detached || true
  wait_for RabbitMQ amqp_up 120
fi
echo "services: PostgreSQL and RabbitMQ are up"
