#!/usr/bin/env bash
# deploy/maskrelay.service and deploy/maskrelay.sysusers, tested without a running systemd
# (this machine has none as PID 1): systemd-analyze verifies the unit, systemd-sysusers
# creates the user in a scratch root, and the unit's steps run as plain processes: `init
# --owner` as root in an /etc/maskrelay, a state directory as StateDirectory= makes it,
# `serve` as the unprivileged user with the unit's UMask, ExecReload's SIGHUP, KillSignal's
# SIGTERM. The unprivileged user is `nobody` (the host's user database is not ours to
# change); the unit names `maskrelay`. Uses the fixed ports 2525 and 8080 of the config
# `init` writes.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${CARGO_TARGET_DIR:-$root/target}/release/maskrelay
(cd "$root" && cargo build --quiet --locked --release --bin maskrelay)
scratch=$(mktemp -d)
chmod 755 "$scratch"
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$scratch"; }
trap cleanup EXIT
fail() { echo "systemd: $1"; [ -f "$scratch/serve.err" ] && cat "$scratch/serve.err"; exit 1; }

# 1. The unit as systemd reads it (ExecStart pointed at the binary built here).
unit=$scratch/maskrelay.service
sed "s#/usr/local/bin/maskrelay#$scratch/usr/local/bin/maskrelay#g" "$root/deploy/maskrelay.service" >"$unit"
install -D -m 755 "$bin" "$scratch/usr/local/bin/maskrelay"
out=$(systemd-analyze verify "$unit" 2>&1) || fail "systemd-analyze verify: $out"
[ -z "$out" ] || fail "systemd-analyze verify complains: $out"
for key in StateDirectory=maskrelay ExecReload= User=maskrelay UMask=0077 AmbientCapabilities=CAP_NET_BIND_SERVICE; do
  grep -q "^$key" "$unit" || fail "the unit lacks $key"
done

# 2. The sysusers file creates the user the unit runs as.
mkdir -p "$scratch/sysroot/etc"
: >"$scratch/sysroot/etc/passwd"
: >"$scratch/sysroot/etc/group"
systemd-sysusers --root="$scratch/sysroot" "$root/deploy/maskrelay.sysusers" >/dev/null 2>&1 ||
  fail "systemd-sysusers rejected deploy/maskrelay.sysusers"
grep -q '^maskrelay:x:[0-9]*:[0-9]*:[^:]*:/var/lib/maskrelay:/usr/sbin/nologin$' "$scratch/sysroot/etc/passwd" ||
  fail "no maskrelay user: $(cat "$scratch/sysroot/etc/passwd")"

if [ "$(id -u)" -ne 0 ]; then
  echo "systemd: SKIPPED the steps as processes (they need root, as the real install does)"
  echo "systemd: 2 passed, 0 failed"
  exit 0
fi

# 3. The install steps: init as root in /etc/maskrelay, files given to the service user.
user=nobody
etc=$scratch/etc/maskrelay
state=$scratch/var/lib/maskrelay
install -d -m 755 "$etc"
(cd "$etc" && "$scratch/usr/local/bin/maskrelay" init --domain relay.example.com --owner "$user" >relay.zone 2>init.err) ||
  fail "init --owner: $(cat "$etc/init.err")"
for f in maskrelay.toml maskrelay.key maskrelay-dkim.pem; do
  [ "$(stat -c '%U %a' "$etc/$f")" = "$user 600" ] || fail "$f is $(stat -c '%U %a' "$etc/$f"), not $user 600"
done
grep -q "IN MX" "$etc/relay.zone" || fail "init printed no records"
# StateDirectory=maskrelay with StateDirectoryMode=0700.
install -d -m 700 -o "$user" "$state"

# 4. serve as the user, in the state directory, with the unit's umask.
runuser -u "$user" -- sh -c "cd '$state' && umask 0077 && exec '$scratch/usr/local/bin/maskrelay' serve --config '$etc/maskrelay.toml'" \
  >"$scratch/serve.out" 2>"$scratch/serve.err" &
pid=$!
for _ in $(seq 1 200); do
  "$scratch/usr/local/bin/maskrelay" --config "$etc/maskrelay.toml" health >/dev/null 2>&1 && break
  kill -0 "$pid" 2>/dev/null || fail "serve exited"
  sleep 0.1
done
"$scratch/usr/local/bin/maskrelay" --config "$etc/maskrelay.toml" health >/dev/null || fail "not healthy"
[ "$(stat -c '%U %a' "$state/maskrelay.db")" = "$user 600" ] || fail "the database is $(stat -c '%U %a' "$state/maskrelay.db")"
# The service user reads its keys; others do not.
if runuser -u daemon -- cat "$etc/maskrelay.key" >/dev/null 2>&1; then fail "another user reads the privacy key"; fi

# 5. ExecReload, then KillSignal.
relay=$(pgrep -u "$user" -f "maskrelay serve --config $etc/maskrelay.toml" | head -n1)
kill -HUP "$relay"
for _ in $(seq 1 100); do grep -q "reloaded" "$scratch/serve.err" && break; sleep 0.1; done
grep -q "reloaded" "$scratch/serve.err" || fail "SIGHUP did not reload"
kill -TERM "$relay"
wait "$pid" || fail "serve did not stop cleanly on SIGTERM"
pid=""
grep -q "shutting down" "$scratch/serve.err" || fail "no clean shutdown"
echo "systemd: 5 passed, 0 failed"
