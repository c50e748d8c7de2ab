#!/usr/bin/env python3
"""Peak RSS of the relay receiving N concurrent maximum-size messages.

Starts `maskrelay serve` (the release binary given with --bin) on free loopback ports with
a fresh SQLite database, creates a store and a thread through the API, sends N messages of
SIZE bytes at once over SMTP (a multipart message with one base64 attachment: what a large
mail usually is), and reads the process's VmHWM (peak RSS) and VmRSS from /proc. Delivery
is pointed at a closed port with a long retry, so what is measured is the inbound side:
reception, parse, rewrite and enqueue. A `452` (no room in `smtp.data_memory_bytes` at
that moment) is sent again after --retry-secs, as a sending MTA would; `attempts` counts
the tries of each message.

    python3 bench/memory.py --bin target/release/maskrelay --messages 10
"""
import argparse, base64, json, os, random, smtplib, socket, subprocess, sys, tempfile, threading, time, urllib.request

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmHWM", "VmRSS"):
                out[k] = int(v.split()[0]) // 1024
    return out

def message(alias, size):
    head = (f"From: Acme Orders <orders@acme.example>\r\nTo: {alias}\r\nSubject: big\r\n"
            "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n"
            "--b\r\nContent-Type: text/plain\r\n\r\nHello Jane, the catalogue is attached.\r\n"
            "--b\r\nContent-Type: application/pdf; name=\"catalogue.pdf\"\r\n"
            "Content-Transfer-Encoding: base64\r\n\r\n").encode()
    tail = b"\r\n--b--\r\n"
    room = size - len(head) - len(tail)
    raw = random.randbytes(room * 3 // 4 * 76 // 78)
    b64 = base64.encodebytes(raw).replace(b"\n", b"\r\n")[:room]
    return head + b64 + tail

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--messages", type=int, default=10)
    ap.add_argument("--size", type=int, default=25 * 1024 * 1024 - 64 * 1024)
    ap.add_argument("--smtp", action="append", default=[], metavar="KEY=VALUE",
                    help="an extra [smtp] setting, e.g. data_memory_bytes=1073741824")
    ap.add_argument("--retries", type=int, default=100, help="times a 452 is sent again")
    ap.add_argument("--retry-secs", type=float, default=0.5)
    args = ap.parse_args()
    d = tempfile.mkdtemp(prefix="maskrelay-mem-")
    smtp, api = free_port(), free_port()
    token = "bench-token-0123456789abcdef"
    extra = "\n".join(args.smtp)
    cfg = f"""
[relay]
domain = "relay.test"
[smtp]
listen = "127.0.0.1:{smtp}"
{extra}
[auth]
mode = "envelope"
[egress]
mode = "smarthost"
smarthost = "127.0.0.1:9"
retry_base_secs = 3600
retry_max_secs = 3600
[database]
url = "sqlite://{d}/relay.db"
[api]
listen = "127.0.0.1:{api}"
token = "{token}"
[dkim]
private_key_path = "{d}/dkim.pem"
[privacy]
key_file = "{d}/keys"
"""
    open(f"{d}/relay.toml", "w").write(cfg)
    proc = subprocess.Popen([args.bin, "serve", "--config", f"{d}/relay.toml"],
                            stdout=subprocess.DEVNULL, stderr=open(f"{d}/relay.log", "w"))
    try:
        def call(method, path, body=None):
            req = urllib.request.Request(f"http://127.0.0.1:{api}{path}", method=method,
                                         data=json.dumps(body).encode() if body else None,
                                         headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
            return json.load(urllib.request.urlopen(req))
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", api), 0.2).close(); break
            except OSError:
                time.sleep(0.1)
        call("POST", "/v1/stores", {"id": "acme", "name": "Acme", "contact": "support@acme.example",
                                    "senders": ["orders@acme.example"]})
        alias = call("POST", "/v1/threads", {"order": "o1", "store": "acme",
                                             "shopper": {"email": "jane@shopper.example", "name": "Jane"}})["shopper_alias"]
        msgs = [message(alias, args.size) for _ in range(args.messages)]
        base = status(proc.pid)
        results = [None] * args.messages
        attempts = [0] * args.messages
        def send(i):
            t = time.monotonic()
            while True:
                attempts[i] += 1
                try:
                    with smtplib.SMTP("127.0.0.1", smtp, timeout=600) as s:
                        s.sendmail("orders@acme.example", [alias], msgs[i])
                    results[i] = ("250", time.monotonic() - t)
                    return
                except (smtplib.SMTPSenderRefused, smtplib.SMTPDataError) as e:
                    # 452 4.3.1 (no room in smtp.data_memory_bytes now): sent again
                    # later, as an MTA does, up to --retries times.
                    if e.smtp_code == 452 and attempts[i] <= args.retries:
                        time.sleep(args.retry_secs)
                        continue
                    results[i] = (repr(e)[:80], time.monotonic() - t)
                    return
                except Exception as e:  # a refusal is a result too
                    results[i] = (repr(e)[:80], time.monotonic() - t)
                    return
        start = time.monotonic()
        threads = [threading.Thread(target=send, args=(i,)) for i in range(args.messages)]
        for t in threads: t.start()
        for t in threads: t.join()
        wall = time.monotonic() - start
        time.sleep(1)
        after = status(proc.pid)
        print(json.dumps({"messages": args.messages, "bytes_each": args.size,
                          "rss_before_mib": base["VmRSS"], "peak_rss_mib": after["VmHWM"],
                          "rss_after_mib": after["VmRSS"], "wall_secs": round(wall, 1),
                          "results": [r[0] for r in results], "attempts": attempts,
                          "secs_each": [round(r[1], 1) for r in results]}))
    finally:
        proc.terminate(); proc.wait()

if __name__ == "__main__":
    main()
