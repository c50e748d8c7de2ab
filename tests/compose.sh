#!/usr/bin/env bash
# deploy/compose.yaml and deploy/Dockerfile, run as plain processes (this machine has no
# Docker daemon): the secrets made as compose.yaml's header says, each relay service's
# environment read from compose.yaml (with ${…} taken from the .env file) on top of the
# Dockerfile's ENV, /run/secrets/* pointed at the secret files, PostgreSQL waited for with
# compose's own healthcheck command and each relay with its HEALTHCHECK command. Then:
# both relays serve one database with the shared keys, the operator API answers on its
# port and not on the public one, a relay killed and restarted (restart: unless-stopped)
# comes back, SIGTERM stops them cleanly. Needs PostgreSQL at 127.0.0.1:5432 (trust auth).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${CARGO_TARGET_DIR:-$root/target}/release/maskrelay
(cd "$root" && cargo build --quiet --locked --release --bin maskrelay)
python3 -c 'import yaml' 2>/dev/null || python3 -m pip install -q pyyaml
pg=(psql -h 127.0.0.1 -U postgres -d test -qAt)
"${pg[@]}" -c 'SELECT 1' >/dev/null 2>&1 || {
  echo "compose: SKIPPED: PostgreSQL not reachable at 127.0.0.1:5432"
  [ -z "${MRTEST_REQUIRE_POSTGRES:-}" ] || exit 1
  exit 0
}
scratch=$(mktemp -d)
db=maskrelay_compose_$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  "${pg[@]}" -c "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1 || true
  rm -rf "$scratch"
}
trap cleanup EXIT
fail() { echo "compose: $1"; for f in "$scratch"/*.err; do [ -f "$f" ] && { echo "--- $f"; tail -n 20 "$f"; }; done; exit 1; }

# The secrets, as compose.yaml's header makes them (with the binary in place of
# `docker run --rm maskrelay`).
cd "$scratch"
mkdir -p secrets
"$bin" keys generate >secrets/privacy.key
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out secrets/dkim.pem 2>/dev/null
chmod 600 secrets/*
printf 'POSTGRES_PASSWORD=%s\nMASKRELAY_API_TOKEN=%s\n' "$(openssl rand -hex 24)" "$(openssl rand -hex 24)" >.env

# The compose database: the role and database the postgres service's environment names.
"${pg[@]}" -c "DO \$\$ BEGIN CREATE ROLE maskrelay LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END \$\$" >/dev/null
"${pg[@]}" -c "CREATE DATABASE $db OWNER maskrelay" >/dev/null

# One environment file per relay service: Dockerfile ENV, then the service's environment.
# Inside a container every relay has the ports to itself; as processes on one host each
# gets free ones (same 0.0.0.0 binding). The compose host `postgres` is 127.0.0.1 here.
python3 - "$root" "$scratch" "$db" <<'PY'
import os, re, socket, sys, yaml
root, scratch, db = sys.argv[1:]
dotenv = dict(l.split("=", 1) for l in open(os.path.join(scratch, ".env")).read().split())
def interpolate(v):
    def sub(m):
        name = m.group(1)
        if name not in dotenv:
            sys.exit(f"compose: {name} is not in .env: {m.group(0)}")
        return dotenv[name]
    return re.sub(r"\$\{([A-Z_]+)(?::\?[^}]*)?\}", sub, str(v))
dockerfile = open(os.path.join(root, "deploy/Dockerfile")).read().replace("\\\n", " ")
env_line = next(l for l in dockerfile.splitlines() if l.startswith("ENV "))
base = dict(kv.split("=", 1) for kv in env_line[4:].split())
compose = yaml.safe_load(open(os.path.join(root, "deploy/compose.yaml")))
pg_env = compose["services"]["postgres"]["environment"]
assert interpolate(pg_env["POSTGRES_PASSWORD"]) == dotenv["POSTGRES_PASSWORD"]
assert compose["services"]["postgres"]["healthcheck"]["test"][0] == "CMD-SHELL"
open(os.path.join(scratch, "pg-healthcheck"), "w").write(compose["services"]["postgres"]["healthcheck"]["test"][1])
def free():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p
for name in ("relay-a", "relay-b"):
    svc = compose["services"][name]
    assert svc["depends_on"]["postgres"]["condition"] == "service_healthy", name
    assert svc["restart"] in ("unless-stopped", "always"), name
    assert svc["healthcheck"]["test"] == ["CMD", "/usr/local/bin/maskrelay", "health"], name
    published = [p for p in svc["ports"] if p.endswith(":8080")]
    assert published and all(p.startswith("127.0.0.1:") for p in published), f"{name}: operator API published beyond this host: {svc['ports']}"
    env = dict(base)
    env.update({k: interpolate(v) for k, v in svc["environment"].items()})
    for key in ("MASKRELAY_PRIVACY_KEY_FILE", "MASKRELAY_DKIM_PRIVATE_KEY_PATH"):
        secret = env[key].removeprefix("/run/secrets/")
        assert secret in svc["secrets"] and secret in compose["secrets"], f"{name}: {key} is no secret of the service"
        env[key] = os.path.join(scratch, compose["secrets"][secret]["file"].removeprefix("./"))
    env["MASKRELAY_DATABASE_URL"] = env["MASKRELAY_DATABASE_URL"].replace("@postgres:5432/maskrelay", f"@127.0.0.1:5432/{db}")
    ports = {}
    for key in ("MASKRELAY_SMTP_LISTEN", "MASKRELAY_API_LISTEN", "MASKRELAY_API_PUBLIC_LISTEN"):
        ports[key] = free()
        env[key] = env[key].rsplit(":", 1)[0] + f":{ports[key]}"
    with open(os.path.join(scratch, f"{name}.env"), "w") as f:
        for k, v in env.items():
            f.write(f"export {k}='{v}'\n")
        f.write(f"API_PORT={ports['MASKRELAY_API_LISTEN']}\nPUBLIC_PORT={ports['MASKRELAY_API_PUBLIC_LISTEN']}\nSMTP_PORT={ports['MASKRELAY_SMTP_LISTEN']}\n")
PY

# depends_on: postgres: service_healthy — compose's healthcheck command, over TCP here.
healthcheck=$(cat pg-healthcheck)
for _ in $(seq 1 50); do $healthcheck -h 127.0.0.1 >/dev/null 2>&1 && break; sleep 0.2; done
$healthcheck -h 127.0.0.1 >/dev/null || fail "postgres healthcheck: $healthcheck"

start() { # service: starts it in the background with its environment
  (set -a; . "./$1.env"; cd "$scratch"; exec "$bin" serve) >"$1.out" 2>"$1.err" &
  pids+=($!)
  eval "pid_${1//-/_}=$!"
}
healthy() { # service: its HEALTHCHECK command until it passes
  for _ in $(seq 1 150); do
    (set -a; . "./$1.env"; "$bin" health) >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  fail "$1 never became healthy"
}
start relay-a
start relay-b
healthy relay-a
healthy relay-b

port() { sed -n "s/^$2=//p" "$1.env"; }
a_api=$(port relay-a API_PORT); a_public=$(port relay-a PUBLIC_PORT)
b_api=$(port relay-b API_PORT); b_smtp=$(port relay-b SMTP_PORT); b_public=$(port relay-b PUBLIC_PORT)
token=$(sed -n 's/^MASKRELAY_API_TOKEN=//p' .env)
auth=(-H "Authorization: Bearer $token" -H 'Content-Type: application/json')
curl -sf "${auth[@]}" -X POST "http://127.0.0.1:$a_api/v1/stores" \
  -d '{"id":"acme","name":"Acme","contact":"support@acme.example","senders":["orders@acme.example"]}' >/dev/null ||
  fail "relay-a: cannot create a store"
thread=$(curl -sf "${auth[@]}" -X POST "http://127.0.0.1:$a_api/v1/threads" \
  -d '{"order":"1001","store":"acme","shopper":{"email":"jane@example.com"}}') || fail "relay-a: cannot create a thread"
id=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])' <<<"$thread")
alias=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["shopper_alias"])' <<<"$thread")
revoke=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["revoke_url"])' <<<"$thread")
case "$revoke" in https://relay.example.com/r/*) ;; *) fail "revoke_url is $revoke, not on api.public_url" ;; esac

# relay-b opens relay-a's thread: the keys are shared.
curl -sf "${auth[@]}" "http://127.0.0.1:$b_api/v1/threads/$id" >/dev/null || fail "relay-b cannot read relay-a's thread"
python3 - "$b_smtp" "$alias" <<'PY' || fail "relay-b does not take mail for relay-a's alias"
import smtplib, sys
with smtplib.SMTP("127.0.0.1", int(sys.argv[1])) as s:
    s.ehlo()
    s.mail("orders@acme.example")
    code, text = s.rcpt(sys.argv[2])
    sys.exit(0 if code == 250 else 1)
PY
# The public port serves the shopper page and nothing of the operator's.
path=${revoke#https://relay.example.com}
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$b_public$path")" = 200 ] || fail "revoke page not on the public port"
[ "$(curl -s -o /dev/null -w '%{http_code}' "${auth[@]}" "http://127.0.0.1:$a_public/v1/stores")" = 404 ] ||
  fail "the operator API answers on the public port"

# restart: unless-stopped — relay-a dies hard, is started again, comes back on the same data.
kill -KILL "$pid_relay_a"
wait "$pid_relay_a" 2>/dev/null || true
start relay-a
healthy relay-a
curl -sf "${auth[@]}" "http://127.0.0.1:$a_api/v1/threads/$id" >/dev/null || fail "relay-a lost the thread after a restart"

# docker compose stop: SIGTERM, a clean exit.
for p in "$pid_relay_a" "$pid_relay_b"; do kill -TERM "$p"; wait "$p" || fail "a relay did not stop cleanly"; done
pids=()
grep -q '"message":"shutting down"' relay-b.err || fail "relay-b logged no clean shutdown (JSON logs)"
echo "compose: 1 passed, 0 failed"
