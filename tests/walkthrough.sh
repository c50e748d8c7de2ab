#!/usr/bin/env bash
# Runs the README's walk-through against the built binary: sink, relay, store, thread,
# a message sent with Python's smtplib, and checks what the sink printed.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${MRTEST_BIN:-}" ]; then
  cargo build --quiet --bin maskrelay
fi
BIN=${MRTEST_BIN:-${CARGO_TARGET_DIR:-target}/debug/maskrelay}
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
fail() { echo "walkthrough: $1"; echo "--- sink"; cat "$work/sink.log"; echo "--- relay"; cat "$work/relay.log"; exit 1; }

python3 -u deploy/sink.py 2526 >"$work/sink.log" 2>&1 & pids+=($!)
MASKRELAY_API_TOKEN=walkthrough-token-123456 \
MASKRELAY_AUTH_MODE=envelope \
MASKRELAY_EGRESS_MODE=smarthost MASKRELAY_EGRESS_SMARTHOST=127.0.0.1:2526 \
MASKRELAY_DATABASE_URL="sqlite://$work/walkthrough.db" MASKRELAY_DKIM_PRIVATE_KEY_PATH="$work/dkim.pem" \
MASKRELAY_PRIVACY_KEY_FILE="$work/maskrelay.key" \
"$BIN" serve >"$work/relay.out" 2>"$work/relay.log" & pids+=($!)

for _ in $(seq 1 100); do curl -sf http://127.0.0.1:8080/healthz >/dev/null && break; sleep 0.1; done
curl -sf http://127.0.0.1:8080/healthz >/dev/null || fail "the relay did not come up on 127.0.0.1:8080"
auth=(-H 'Authorization: Bearer walkthrough-token-123456' -H 'Content-Type: application/json')
curl -sf -X POST http://127.0.0.1:8080/v1/stores "${auth[@]}" \
  -d '{"id":"acme","name":"Acme Shop","contact":"support@acme.example","senders":["orders@acme.example"]}' >/dev/null
thread=$(curl -sf -X POST http://127.0.0.1:8080/v1/threads "${auth[@]}" \
  -d '{"order":"1001","store":"acme","shopper":{"email":"jane@example.com","name":"Jane"}}')
ALIAS=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["shopper_alias"])' <<<"$thread")

ALIAS=$ALIAS python3 - <<'PY'
import os, smtplib
from email.message import EmailMessage
m = EmailMessage()
m["From"] = "Acme Orders <orders@acme.example>"
m["To"] = os.environ["ALIAS"]
m["Subject"] = "Your order 1001 has shipped"
m.set_content("Hello Jane, your parcel is on its way.")
with smtplib.SMTP("127.0.0.1", 2525) as s:
    s.send_message(m)
PY

for _ in $(seq 1 100); do grep -q "Hello Jane" "$work/sink.log" && break; sleep 0.1; done
grep -q 'To: "Jane" <jane@example.com>' "$work/sink.log" || fail "shopper did not get the mail"
grep -q 'From: "Acme Shop" <acme\.' "$work/sink.log" || fail "store not masked"
grep -q "acme.example" "$work/sink.log" && fail "the store's address reached the shopper"
# An outsider is refused and counted.
python3 - "$ALIAS" <<'PY' || fail "outsider not refused"
import smtplib, sys
with smtplib.SMTP("127.0.0.1", 2525) as s:
    s.ehlo()
    s.mail("spam@outsider.example")
    code, _ = s.rcpt(sys.argv[1])
    sys.exit(0 if code == 550 else 1)
PY
leaks=$(curl -sf http://127.0.0.1:8080/v1/stores/acme/leaks "${auth[@]}")
grep -q '"leaked_aliases":1' <<<"$leaks" || fail "leak not counted: $leaks"
# Logs at info level never carry a real address (store or shopper).
if grep -Ei "jane@example.com|orders@acme.example|support@acme.example|spam@outsider.example" "$work/relay.log"; then
  fail "a real address reached the relay's log"
fi
grep -q "message queued" "$work/relay.log" || fail "expected info logs to check"

# The privacy key file was made on first start, for the owner only; the database holds the
# shopper's address sealed, never in the clear.
[ "$(stat -c %a "$work/maskrelay.key")" = 600 ] || fail "the privacy key file is not mode 600"
if grep -q "jane@example.com" "$work/walkthrough.db"*; then fail "the database holds the address in the clear"; fi

# Key rotation (README, "Privacy keys"): stop, put a new key in front, re-seal, drop the old.
kill "${pids[1]}"; wait "${pids[1]}" 2>/dev/null || true
export MASKRELAY_DATABASE_URL="sqlite://$work/walkthrough.db" MASKRELAY_PRIVACY_KEY_FILE="$work/maskrelay.key"
old=$(grep -v '^#' "$work/maskrelay.key")
{ "$BIN" keys generate; echo "$old"; } >"$work/rotated.key" && mv "$work/rotated.key" "$work/maskrelay.key"
"$BIN" keys rotate >"$work/rotate.out" 2>"$work/rotate.err" || fail "keys rotate: $(cat "$work/rotate.err")"
grep -q "threads: 1 rows, 1 re-sealed" "$work/rotate.out" || fail "rotation: $(cat "$work/rotate.out")"
grep -q "rows scanned" "$work/rotate.err" || fail "rotation shows no progress"
head -n1 "$work/maskrelay.key" >"$work/new-only.key" && mv "$work/new-only.key" "$work/maskrelay.key"
"$BIN" thread list --store acme | grep -q '"order": "1001"' || fail "the thread does not open with the new key alone"
echo "walkthrough: 1 passed, 0 failed"
