#!/usr/bin/env bash
# Runs the README's walk-through as written: each code block marked <!-- walkthrough:NAME -->
# is taken from README.md and run unchanged (sink and relay in the background, the rest in
# order), in a scratch directory under target/ (so `cargo run` finds the manifest and the
# relay's files land there), then checks what the sink printed. Uses the fixed ports
# 2525, 2526 and 8080 the README uses.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
readme=$root/README.md

# The fenced block after the marker <!-- walkthrough:NAME --> (or <!-- NAME -->).
block() {
  local text
  text=$(awk -v marker="<!-- $1 -->" '
    $0 == marker { found = 1; next }
    found && /^```/ { if (inside) exit; inside = 1; next }
    inside { print }
  ' "$readme")
  [ -n "$text" ] || { echo "walkthrough: README.md has no block marked <!-- $1 -->" >&2; exit 1; }
  printf '%s\n' "$text"
}

# Build first, so the relay's `cargo run --release` starts at once (and a build error shows
# here, not as a relay that never answers).
(cd "$root" && cargo build --quiet --locked --release --bin maskrelay)

mkdir -p "$root/target"
work=$(mktemp -d "$root/target/walkthrough.XXXXXX")
ln -s "$root/deploy" "$work/deploy"
cd "$work"
groups=()
cleanup() {
  for g in "${groups[@]}"; do kill -TERM -- "-$g" 2>/dev/null || true; done
  wait 2>/dev/null || true
  cd "$root" && rm -rf "$work"
}
trap cleanup EXIT
fail() {
  echo "walkthrough: $1"
  for f in sink.log relay.log step.out; do [ -f "$f" ] && { echo "--- $f"; cat "$f"; }; done
  exit 1
}
# Runs a block in its own process group in the background (a terminal of its own).
background() { setsid bash -c "$(block "walkthrough:$1")" >"$2" 2>"$3" & groups+=($!); }
step() { bash -c "$(block "walkthrough:$1")" >step.out 2>&1 || fail "step $1 failed"; cat step.out; }
wait_for() { # FILE PATTERN
  for _ in $(seq 1 200); do grep -q -- "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
  fail "$2 never appeared in $1"
}

background sink sink.log sink.log
background relay relay.out relay.log
for _ in $(seq 1 300); do curl -sf http://127.0.0.1:8080/healthz >/dev/null && break; sleep 0.1; done
curl -sf http://127.0.0.1:8080/healthz >/dev/null || fail "the relay did not come up on 127.0.0.1:8080"

step thread
grep -q '"shopper_alias"' thread.json || fail "no thread in thread.json"

step store-sends
wait_for sink.log "Hello Jane"
grep -q 'To: "Jane" <jane@example.com>' sink.log || fail "shopper did not get the mail"
grep -q 'From: "Acme Shop" <acme\.' sink.log || fail "store not masked"
grep -q "^List-Unsubscribe: <http://127.0.0.1:8080/r/" sink.log || fail "no revoke link"
grep -q "acme.example" sink.log && fail "the store's address reached the shopper"

step shopper-replies
wait_for sink.log "leave it with the neighbour"
# The second message, as the store receives it.
awk '/^=== message/ { n++ } n == 2' sink.log >reply.txt
grep -q "to <support@acme.example>" reply.txt || fail "the reply did not go to the store's contact"
grep -q '^From: "Jane via Marketplace" <[a-z0-9]*@relay.localhost>' reply.txt || fail "shopper not masked"
grep -q "example.com" reply.txt && fail "the shopper's address reached the store"

step outsider
grep -q "(550, b'5.7.1" step.out || fail "outsider not refused with 550 5.7.1"
grep -q '"leaked_aliases":1' step.out || fail "leak not counted"

# Logs at info level never carry a real address (store or shopper).
if grep -Ei "jane@example.com|orders@acme.example|support@acme.example|spam@outsider.example" relay.log; then
  fail "a real address reached the relay's log"
fi
grep -q "message queued" relay.log || fail "expected info logs to check"

# The relay's files were made on first start, for the owner only; the database holds the
# shopper's address sealed, never in the clear.
for f in maskrelay.key maskrelay-dkim.pem walkthrough.db; do
  [ "$(stat -c %a "$f")" = 600 ] || fail "$f is not mode 600"
done
if grep -q "jane@example.com" walkthrough.db*; then fail "the database holds the address in the clear"; fi

# Key rotation (README, "Privacy keys"): stop, put a new key in front, re-seal, drop the old.
kill -TERM -- "-${groups[1]}"
while kill -0 "${groups[1]}" 2>/dev/null; do sleep 0.1; done
grep -q "shutting down" relay.log || fail "the relay did not stop cleanly"
bin=${CARGO_TARGET_DIR:-$root/target}/release/maskrelay
export MASKRELAY_DATABASE_URL=sqlite://walkthrough.db
old=$(grep -v '^#' maskrelay.key)
{ "$bin" keys generate; echo "$old"; } >rotated.key && mv rotated.key maskrelay.key
"$bin" keys rotate >rotate.out 2>rotate.err || fail "keys rotate: $(cat rotate.err)"
grep -q "threads: 1 rows, 1 re-sealed" rotate.out || fail "rotation: $(cat rotate.out)"
grep -q "rows scanned" rotate.err || fail "rotation shows no progress"
head -n1 maskrelay.key >new-only.key && mv new-only.key maskrelay.key
"$bin" thread list --store acme | grep -q '"order": "1001"' || fail "the thread does not open with the new key alone"
echo "walkthrough: 1 passed, 0 failed"
