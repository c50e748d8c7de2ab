#!/usr/bin/env python3
"""maskrelay beside Postfix, on this machine, with Postfix's own load tools.

    python3 bench/postfix_compare.py [--maskrelay ./target/release/maskrelay] [--quick]

What it does (Python 3.11 standard library only; run as root, as Postfix's master wants):

- Fetches Postfix from Debian's packages without installing anything (`apt-get download
  postfix`, `dpkg -x`) into a cache directory under /tmp, and runs it as a private instance:
  its own config_directory and queue_directory, `postfix -c DIR start`, smtpd on a high
  port, the alias as a `virtual_alias_maps` entry (texthash), `relayhost` = the sink.
- Runs maskrelay's release binary with `serve` on a generated config (auth.mode envelope,
  egress.mode smarthost = the sink, a fresh database per run: SQLite in the work directory
  or a fresh PostgreSQL database), creates the store and the thread through its HTTP API,
  and sends the messages to the thread's shopper alias.
- Load: `smtp-source` from the same package (N messages over S sessions, each session
  sending its messages over one connection); next hop: `smtp-sink -d`, which dumps every
  message to its own file. The ceiling is smtp-source straight into smtp-sink.
- Per run: accept rate (N / time until smtp-source has its 250s), end-to-end rate (N /
  time until the sink holds N messages), relay CPU per message (user+system ticks from
  /proc/<pid>/stat; for Postfix every process under its master plus the master's reaped
  children), and checks: every message arrived exactly once (distinct Message-ID per
  dump, none twice, none missing, every one to the shopper's real address) and the relay's
  queue is empty at the end.
- Runs are interleaved (ceiling, maskrelay, Postfix, maskrelay, ... within each round, the
  order reversed every other round); the table shows medians of --runs rounds, the spread
  (min-max) beside them, and the load average while they ran.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
DOMAIN = "relay.bench"
SENDER = "orders@shop.bench"
SHOPPER = "shopper@inbox.bench"
TOKEN = "bench-token-0123456789abcdef0123456789"
# Appended to the relay's PostgreSQL URL (--pg-params), e.g. "?sslmode=disable".
PG_PARAMS = ""


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 30.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {timeout} s")


def loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


# ---------------------------------------------------------------------------------------
# /proc accounting


def proc_stat(pid: int):
    """(ppid, utime+stime, cutime+cstime) in ticks, or None when the process is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rest = raw[raw.rindex(")") + 2 :].split()
    # rest[0] is field 3 (state); utime is field 14, stime 15, cutime 16, cstime 17.
    return int(rest[1]), int(rest[11]) + int(rest[12]), int(rest[13]) + int(rest[14])


def tree_ticks(root: int) -> int:
    """CPU ticks of `root`, its live descendants, and the children it has reaped."""
    children: dict[int, list[int]] = {}
    stats = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        st = proc_stat(int(d))
        if st is None:
            continue
        stats[int(d)] = st
        children.setdefault(st[0], []).append(int(d))
    if root not in stats:
        return 0
    total = stats[root][1] + stats[root][2]
    todo = list(children.get(root, []))
    while todo:
        p = todo.pop()
        # A live child: its own time (its reaped children are in its cutime).
        total += stats[p][1] + stats[p][2]
        todo.extend(children.get(p, []))
    return total


# ---------------------------------------------------------------------------------------
# Postfix from Debian's package


class PostfixPackage:
    def __init__(self, cache: Path):
        self.cache = cache
        self.root = cache / "root"

    def fetch(self):
        if (self.root / "usr/sbin/postfix").exists():
            return
        self.cache.mkdir(parents=True, exist_ok=True)
        debs = glob.glob(str(self.cache / "postfix_*.deb"))
        if not debs:
            log("fetching postfix with apt-get download")
            subprocess.run(["apt-get", "download", "postfix"], cwd=self.cache, check=True,
                           stdout=subprocess.DEVNULL)
            debs = glob.glob(str(self.cache / "postfix_*.deb"))
        subprocess.run(["dpkg", "-x", debs[0], str(self.root)], check=True)

    @property
    def env(self):
        env = dict(os.environ)
        env["LD_LIBRARY_PATH"] = str(self.root / "usr/lib/postfix")
        return env

    def bin(self, name: str) -> str:
        return str(self.root / "usr/sbin" / name)

    def version(self) -> str:
        out = subprocess.run([self.bin("postconf"), "-d", "mail_version"], env=self.env,
                             capture_output=True, text=True).stdout
        return out.split("=")[-1].strip()


MASTER_CF = """\
127.0.0.1:{port} inet n - n - {procs} smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
showq     unix  n       -       n       -       -       showq
"""


class PostfixInstance:
    """A private Postfix: not a service, nothing under /etc, gone when stopped."""

    def __init__(self, pkg: PostfixPackage, work: Path, sink_port: int, alias: str):
        self.pkg = pkg
        self.dir = work / "postfix"
        self.conf = self.dir / "conf"
        self.queue = self.dir / "queue"
        self.port = free_port()
        self.sink_port = sink_port
        self.alias = alias
        self.master_pid = None

    def write_config(self):
        shutil.rmtree(self.dir, ignore_errors=True)
        self.conf.mkdir(parents=True)
        self.queue.mkdir()
        r = self.pkg.root
        main_cf = f"""\
compatibility_level = 3.6
config_directory = {self.conf}
queue_directory = {self.queue}
data_directory = {self.dir}/data
daemon_directory = {r}/usr/lib/postfix/sbin
command_directory = {r}/usr/sbin
shlib_directory = {r}/usr/lib/postfix
meta_directory = {r}/etc/postfix
sendmail_path = {r}/usr/sbin/sendmail
newaliases_path = {r}/usr/bin/newaliases
mailq_path = {r}/usr/bin/mailq
manpage_directory = {r}/usr/share/man
sample_directory = no
readme_directory = no
html_directory = no
mail_owner = mail
setgid_group = news
import_environment = MAIL_CONFIG MAIL_DEBUG MAIL_LOGTAG TZ LANG LD_LIBRARY_PATH
maillog_file_prefixes = /tmp
maillog_file = {self.dir}/maillog
myhostname = postfix.bench
mydomain = bench
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
virtual_alias_domains = {DOMAIN}
virtual_alias_maps = texthash:{self.conf}/virtual
relayhost = [127.0.0.1]:{self.sink_port}
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
alias_maps =
alias_database =
biff = no
smtp_dns_support_level = disabled
smtp_tls_security_level = none
smtpd_tls_security_level = none
"""
        (self.conf / "main.cf").write_text(main_cf)
        (self.conf / "master.cf").write_text(MASTER_CF.format(port=self.port, procs=100))
        (self.conf / "virtual").write_text(f"{self.alias} {SHOPPER}\n")
        shutil.copy(r / "usr/share/postfix/dynamicmaps.cf", self.conf / "dynamicmaps.cf")

    def start(self):
        self.write_config()
        subprocess.run([self.pkg.bin("postfix"), "-c", str(self.conf), "start"], env=self.pkg.env,
                       check=True, capture_output=True)
        pidfile = self.queue / "pid/master.pid"
        deadline = time.time() + 20
        while time.time() < deadline and not pidfile.exists():
            time.sleep(0.05)
        self.master_pid = int(pidfile.read_text().split()[0])
        wait_port(self.port)

    def stop(self):
        subprocess.run([self.pkg.bin("postfix"), "-c", str(self.conf), "stop"], env=self.pkg.env,
                       capture_output=True)
        deadline = time.time() + 20
        while self.master_pid and proc_stat(self.master_pid) and time.time() < deadline:
            time.sleep(0.1)

    def ticks(self) -> int:
        return tree_ticks(self.master_pid)

    def queued(self) -> int:
        n = 0
        for q in ("maildrop", "incoming", "active", "deferred", "hold", "corrupt"):
            for _, _, files in os.walk(self.queue / q):
                n += len(files)
        return n


# ---------------------------------------------------------------------------------------
# The sink and the source


class Sink:
    def __init__(self, pkg: PostfixPackage, port: int, dump: Path):
        self.pkg, self.port, self.dump = pkg, port, dump
        self.proc = None

    def start(self):
        shutil.rmtree(self.dump, ignore_errors=True)
        self.dump.mkdir(parents=True)
        shutil.chown(self.dump, "mail")
        self.proc = subprocess.Popen(
            [self.pkg.bin("smtp-sink"), "-u", "mail", "-d", f"{self.dump}/%H%M/%S.",
             f"127.0.0.1:{self.port}", "1024"],
            env=self.pkg.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_port(self.port)

    def count(self) -> int:
        return sum(len(f) for _, _, f in os.walk(self.dump))

    def ticks(self) -> int:
        st = proc_stat(self.proc.pid) if self.proc else None
        return st[1] + st[2] if st else 0

    def stop(self):
        if self.proc:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def check(self, n: int, tag: str) -> dict:
        """Exactly once: n dumps, n distinct Message-IDs, each for the shopper."""
        ids, wrong_rcpt, no_id = {}, 0, 0
        for dirpath, _, files in os.walk(self.dump):
            for f in files:
                head = Path(dirpath, f).read_bytes().split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
                mid, rcpt_ok, subject_ok = None, False, False
                for line in head.replace(b"\r\n", b"\n").split(b"\n"):
                    low = line.lower()
                    if low.startswith(b"message-id:"):
                        mid = line.split(b":", 1)[1].strip()
                    elif low.startswith(b"x-rcpt-args:") and SHOPPER.encode() in low:
                        rcpt_ok = True
                    elif low.startswith(b"subject:") and tag.encode() in line:
                        subject_ok = True
                if mid is None or not subject_ok:
                    no_id += 1
                    continue
                if not rcpt_ok:
                    wrong_rcpt += 1
                ids[mid] = ids.get(mid, 0) + 1
        dumps = sum(ids.values()) + no_id
        dup = sum(c - 1 for c in ids.values() if c > 1)
        return {"dumps": dumps, "distinct": len(ids), "duplicates": dup,
                "missing": max(0, n - len(ids)), "unidentified": no_id, "wrong_rcpt": wrong_rcpt,
                "ok": dumps == n and len(ids) == n and dup == 0 and no_id == 0 and wrong_rcpt == 0}


def run_source(pkg: PostfixPackage, port: int, to: str, n: int, sessions: int, size: int, tag: str):
    """smtp-source: n messages over `sessions` connections kept open (-d), HELO host name
    bench.source. Returns (seconds, rc, stderr)."""
    cmd = [pkg.bin("smtp-source"), "-d", "-s", str(sessions), "-m", str(n), "-l", str(size),
           "-M", "source.bench", "-f", SENDER, "-t", to, "-S", tag, f"127.0.0.1:{port}"]
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, env=pkg.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    err = p.stderr.read()
    # wait4: the CPU smtp-source used, from its own rusage.
    _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    secs = time.monotonic() - t0
    return secs, p.returncode, err.strip()[-500:], usage.ru_utime + usage.ru_stime


# ---------------------------------------------------------------------------------------
# maskrelay


class Maskrelay:
    def __init__(self, binary: Path, work: Path, sink_port: int, db: str, dkim_key: Path,
                 pg_base: str, workers: int | None):
        self.binary, self.work, self.sink_port = binary, work, sink_port
        self.db, self.dkim_key, self.pg_base, self.workers = db, dkim_key, pg_base, workers
        self.proc = None
        self.pg_db = None

    def api(self, method: str, path: str, body=None):
        req = urllib.request.Request(f"http://127.0.0.1:{self.api_port}{path}", method=method,
                                     headers={"Authorization": f"Bearer {TOKEN}",
                                              "Content-Type": "application/json"},
                                     data=json.dumps(body).encode() if body is not None else None)
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read() or b"null")

    def start(self) -> str:
        """Starts a relay on a fresh database; returns the shopper alias to send to."""
        shutil.rmtree(self.work, ignore_errors=True)
        self.work.mkdir(parents=True)
        self.smtp_port, self.api_port = free_port(), free_port()
        if self.db == "sqlite":
            url = f"sqlite://{self.work}/maskrelay.db"
        else:
            self.pg_db = f"mr_bench_{os.getpid()}_{int(time.time() * 1000) % 10**9}"
            psql(self.pg_base, f"CREATE DATABASE {self.pg_db}")
            url = f"{self.pg_base}/{self.pg_db}{PG_PARAMS}"
        workers = f"workers = {self.workers}\n" if self.workers else ""
        (self.work / "maskrelay.toml").write_text(f"""\
[relay]
domain = "{DOMAIN}"
[smtp]
listen = "127.0.0.1:{self.smtp_port}"
max_commands = 10000000
max_connections = 1000
max_connections_per_ip = 1000
[auth]
mode = "envelope"
[dkim]
private_key_path = "{self.dkim_key}"
[egress]
mode = "smarthost"
smarthost = "127.0.0.1:{self.sink_port}"
{workers}[database]
url = "{url}"
[api]
listen = "127.0.0.1:{self.api_port}"
token = "{TOKEN}"
[privacy]
key_file = "{self.work}/maskrelay.key"
[log]
level = "warn"
""")
        self.log = open(self.work / "serve.log", "wb")
        self.proc = subprocess.Popen([str(self.binary), "--config", str(self.work / "maskrelay.toml"),
                                      "serve"], stdout=self.log, stderr=subprocess.STDOUT,
                                     cwd=self.work)
        wait_port(self.api_port)
        wait_port(self.smtp_port)
        self.api("POST", "/v1/stores", {"id": "shop", "name": "Shop", "contact": "support@shop.bench",
                                        "senders": [SENDER]})
        thread = self.api("POST", "/v1/threads", {"order": "o-1", "store": "shop",
                                                  "shopper": {"email": SHOPPER, "name": "Shopper"}})
        alias = thread["shopper_alias"]
        return alias if "@" in alias else f"{alias}@{DOMAIN}"

    def ticks(self) -> int:
        st = proc_stat(self.proc.pid)
        return st[1] + st[2] if st else 0

    def db_snapshot(self) -> dict[int, int]:
        """CPU ticks of the PostgreSQL backends serving this relay's database (their work is
        the relay's, in other processes); {} on SQLite, where it is in the relay's own."""
        if not self.pg_db:
            return {}
        out = subprocess.run(["psql", f"{self.pg_base}/test", "-Atc",
                              f"SELECT pid FROM pg_stat_activity WHERE datname = '{self.pg_db}'"],
                             capture_output=True, text=True).stdout
        snap = {}
        for pid in out.split():
            st = proc_stat(int(pid))
            if st:
                snap[int(pid)] = st[1]
        return snap

    def metrics(self) -> dict[str, float]:
        """The sums and counts of the relay's latency histograms (`name_sum`, `name_count`
        over all label sets), for the means of one run."""
        req = urllib.request.Request(f"http://127.0.0.1:{self.api_port}/metrics",
                                     headers={"Authorization": f"Bearer {TOKEN}"})
        with urllib.request.urlopen(req, timeout=30) as r:
            text = r.read().decode()
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith("#") or " " not in line:
                continue
            key, value = line.rsplit(" ", 1)
            name = key.split("{", 1)[0]
            if name.endswith(("_sum", "_count")) and name in METRIC_SERIES:
                out[name] = out.get(name, 0.0) + float(value)
        return out

    def queued(self) -> int:
        q = self.api("GET", "/v1/queue?limit=1000")
        return len(q["data"] if isinstance(q, dict) else q)

    def stop(self):
        if self.proc:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.log.close()
        if self.pg_db:
            psql(self.pg_base, f"DROP DATABASE IF EXISTS {self.pg_db}")
            self.pg_db = None


# What a run reports from the relay's own metrics: how long the end of DATA took to answer,
# how long a group commit took and how many jobs it held.
METRIC_SERIES = {f"maskrelay_{m}_{k}" for m in ("smtp_accept_seconds", "queue_commit_seconds",
                                                "queue_commit_jobs", "delivery_attempt_seconds")
                 for k in ("sum", "count")}


def metric_means(before: dict, after: dict) -> dict:
    """Per-run means from two scrapes: ms per accept, per commit, per delivery attempt, and
    jobs per commit."""
    d = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in METRIC_SERIES}
    def mean(m, scale):
        n = d[f"maskrelay_{m}_count"]
        return round(d[f"maskrelay_{m}_sum"] / n * scale, 3) if n else None
    return {"accept_ms": mean("smtp_accept_seconds", 1000), "commit_ms": mean("queue_commit_seconds", 1000),
            "jobs_per_commit": mean("queue_commit_jobs", 1), "attempt_ms": mean("delivery_attempt_seconds", 1000),
            "commits": int(d["maskrelay_queue_commit_seconds_count"])}


def psql(base: str, sql: str):
    subprocess.run(["psql", f"{base}/test", "-q", "-c", sql], check=True, capture_output=True)


# ---------------------------------------------------------------------------------------
# One run


@dataclass
class Result:
    accept: float = 0.0
    e2e: float | None = None
    cpu_ms: float | None = None
    db_cpu_ms: float | None = None
    # smtp-source's and smtp-sink's CPU per message: the load generator and the next hop
    # share the 2 CPUs with the relay, so they bound what any relay can reach here.
    harness_ms: float | None = None
    # maskrelay only: means from its metrics (accept_ms, commit_ms, jobs_per_commit, ...).
    means: dict | None = None
    load: float = 0.0
    ok: bool = False
    note: str = ""


def measure(pkg, sink: Sink, port: int, to: str, n: int, sessions: int, size: int, tag: str,
            ticks, queued, deadline: float, db_snapshot=None, metrics=None) -> Result:
    res = Result(load=loadavg())
    sink.start()
    try:
        m0 = metrics() if metrics else None
        t_start = time.monotonic()
        c0 = ticks() if ticks else 0
        d0 = db_snapshot() if db_snapshot else {}
        s0 = sink.ticks()
        secs, rc, err, source_cpu = run_source(pkg, port, to, n, sessions, size, tag)
        res.accept = n / secs
        if rc != 0:
            res.note = f"smtp-source exit {rc}: {err}"
        end = time.monotonic() + deadline
        while sink.count() < n and time.monotonic() < end:
            time.sleep(0.02)
        t_done = time.monotonic()
        c1 = ticks() if ticks else 0
        res.harness_ms = (source_cpu + (sink.ticks() - s0) / CLK_TCK) * 1000 / n
        d1 = db_snapshot() if db_snapshot else {}
        if d1:
            res.db_cpu_ms = sum(t - d0.get(p, 0) for p, t in d1.items()) / CLK_TCK * 1000 / n
        got = sink.count()
        if got >= n:
            res.e2e = n / (t_done - t_start)
        if ticks:
            res.cpu_ms = (c1 - c0) / CLK_TCK * 1000 / n
        if metrics:
            res.means = metric_means(m0, metrics())
        time.sleep(0.5)  # late duplicates, if any, arrive now
        chk = sink.check(n, tag)
        q = queued() if queued else 0
        res.ok = chk["ok"] and q == 0 and rc == 0
        if not res.ok:
            res.note = (res.note + f" check={chk} queued={q}").strip()
    finally:
        sink.stop()
    return res


# ---------------------------------------------------------------------------------------
# The matrix


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt_rate(xs):
    m = med(xs)
    if m is None:
        return "n/a"
    vals = [x for x in xs if x is not None]
    return f"{m:,.0f} ({min(vals):,.0f}-{max(vals):,.0f})" if len(vals) > 1 else f"{m:,.0f}"


def fmt_ms(xs):
    m = med(xs)
    return "n/a" if m is None else f"{m:.2f}"


def gen_key(path: Path, kind: str, binary: Path, work: Path):
    """The DKIM key: RSA-2048 from openssl; Ed25519 as maskrelay itself generates it (ring
    wants PKCS#8 v2, which `openssl genpkey` does not write): a throwaway `serve` with
    `dkim.ed25519_key_path` set creates the file."""
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "rsa":
        subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
                        "-out", str(path)], check=True, capture_output=True)
        return
    tmp = work / "keygen"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    (tmp / "k.toml").write_text(f"""\
[relay]
domain = "{DOMAIN}"
[smtp]
listen = "127.0.0.1:{free_port()}"
[dkim]
private_key_path = "{tmp}/rsa.pem"
ed25519_key_path = "{path}"
[egress]
mode = "smarthost"
smarthost = "127.0.0.1:9"
[database]
url = "sqlite://{tmp}/k.db"
[api]
listen = "127.0.0.1:{free_port()}"
token = "{TOKEN}"
[privacy]
key_file = "{tmp}/k.key"
""")
    p = subprocess.Popen([str(binary), "--config", str(tmp / "k.toml"), "serve"], cwd=tmp,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while not path.exists() and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    p.send_signal(signal.SIGTERM)
    p.wait(30)
    if not path.exists():
        sys.exit(f"maskrelay did not generate {path}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--maskrelay", default="./target/release/maskrelay", type=Path)
    ap.add_argument("--quick", action="store_true",
                    help="small matrix: 10 KB, 10 sessions, SQLite and PostgreSQL, RSA, 2 rounds of 1000")
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--sizes", default="1,10", help="KB, comma-separated")
    ap.add_argument("--sessions", default="1,10,50")
    ap.add_argument("--dbs", default="sqlite,postgres")
    ap.add_argument("--dkim", default="rsa,ed25519")
    ap.add_argument("--workers", type=int, help="egress.workers (default: the relay's default)")
    ap.add_argument("--pg", default="postgres://postgres@127.0.0.1:5432")
    ap.add_argument("--pg-params", default="",
                    help='appended to the relay\'s database URL, e.g. "?sslmode=disable" (the default, '
                         'sslmode=prefer, speaks TLS to a local server too)')
    ap.add_argument("--cache", default="/tmp/maskrelay-bench-postfix", type=Path)
    ap.add_argument("--work", default="/tmp/maskrelay-bench-run", type=Path)
    ap.add_argument("--deadline", type=float, default=300, help="seconds to wait for delivery")
    ap.add_argument("--json", type=Path, help="also write every run as JSON here")
    ap.add_argument("--profile", type=Path,
                    help="instead of the matrix: one maskrelay run per variant under `perf record`, "
                         "reports written to this directory, top costs printed")
    a = ap.parse_args()
    global PG_PARAMS
    PG_PARAMS = a.pg_params
    if a.quick:
        a.sizes, a.sessions, a.dkim = "10", "10", "rsa"
        a.runs, a.messages = min(a.runs, 2), min(a.messages, 1000)
    if os.geteuid() != 0:
        sys.exit("run as root: Postfix's master must start as root (it runs its daemons as `mail`)")
    binary = a.maskrelay.resolve()
    if not binary.exists():
        sys.exit(f"{binary} not found: cargo build --release first")
    sizes = [int(s) for s in a.sizes.split(",")]
    sessions_l = [int(s) for s in a.sessions.split(",")]
    dbs = a.dbs.split(",")
    dkims = a.dkim.split(",")

    pkg = PostfixPackage(a.cache)
    pkg.fetch()
    keys = {k: a.cache / f"dkim-{k}.pem" for k in dkims}
    for k, p in keys.items():
        gen_key(p, k, binary, a.work)
    shutil.rmtree(a.work, ignore_errors=True)
    a.work.mkdir(parents=True)
    sink_port = free_port()
    sink = Sink(pkg, sink_port, a.work / "dump")
    postfix_alias = f"shopper-alias@{DOMAIN}"
    postfix = PostfixInstance(pkg, a.work, sink_port, postfix_alias)
    postfix.start()
    log(f"Postfix {pkg.version()} on port {postfix.port}, sink on {sink_port}")
    variants = [(db, k) for db in dbs for k in dkims]
    if a.profile:
        try:
            profile(a, pkg, sink, sink_port, binary, keys, variants, sizes, sessions_l)
        finally:
            postfix.stop()
        return
    rows = []
    all_runs = []
    seq = 0
    try:
        for size_kb in sizes:
            for sessions in sessions_l:
                per = {("direct",): [], ("postfix",): []}
                for v in variants:
                    per[("maskrelay",) + v] = []
                for rnd in range(a.runs):
                    # ceiling, maskrelay, Postfix, maskrelay, ...: Postfix between the relay's variants.
                    mrs = [("maskrelay",) + v for v in variants]
                    order = [("direct",), mrs[0], ("postfix",)] + mrs[1:]
                    if rnd % 2:
                        order = order[::-1]
                    for who in order:
                        seq += 1
                        tag = f"bench-{os.getpid()}-{seq}"
                        size = size_kb * 1024
                        if who[0] == "direct":
                            r = measure(pkg, sink, sink_port, f"{SHOPPER}", a.messages, sessions, size,
                                        tag, None, None, a.deadline)
                        elif who[0] == "postfix":
                            r = measure(pkg, sink, postfix.port, postfix_alias, a.messages, sessions,
                                        size, tag, postfix.ticks, postfix.queued, a.deadline)
                        else:
                            mr = Maskrelay(binary, a.work / "maskrelay", sink_port, who[1], keys[who[2]],
                                           a.pg, a.workers)
                            try:
                                alias = mr.start()
                                r = measure(pkg, sink, mr.smtp_port, alias, a.messages, sessions, size,
                                            tag, mr.ticks, mr.queued, a.deadline, mr.db_snapshot, mr.metrics)
                            except Exception as e:  # recorded as a failed run, the matrix goes on
                                r = Result(load=loadavg(), note=f"{type(e).__name__}: {e}")
                            finally:
                                mr.stop()
                        per[who].append(r)
                        run = {"size_kb": size_kb, "sessions": sessions, "who": "/".join(who),
                               "round": rnd + 1, **r.__dict__}
                        all_runs.append(run)
                        e2e = f"{r.e2e:.0f}" if r.e2e else "n/a"
                        cpu = f"{r.cpu_ms:.2f}" if r.cpu_ms is not None else "-"
                        if r.db_cpu_ms is not None:
                            cpu += f" + {r.db_cpu_ms:.2f} PostgreSQL"
                        log(f"{size_kb:>3} KB {sessions:>3} sess round {rnd + 1} {'/'.join(who):<26} "
                            f"accept {r.accept:8.0f}/s  e2e {e2e:>6}/s  cpu {cpu} ms/msg  "
                            f"load {r.load:.2f}  {'ok' if r.ok else 'FAILED ' + r.note}"
                            + (f"  {r.means}" if r.means else ""))
                rows.append((size_kb, sessions, per))
    finally:
        postfix.stop()
    if a.json:
        a.json.write_text(json.dumps(all_runs, indent=1))
    print_table(rows, variants, a, pkg)


# ---------------------------------------------------------------------------------------
# Where the CPU goes: perf on the release binary under the same load

# Buckets by symbol: first match wins (lower-case substring of the symbol or the DSO).
BUCKETS = [
    ("kernel (syscalls, TCP, fsync, scheduling)", ["[k]"]),
    ("SHA-256 / HMAC (DKIM body and header hashes, blind index)", ["sha256", "sha512", "sha2::", "hmac"]),
    ("ChaCha20-Poly1305 (sealing at rest)", ["chacha", "poly1305"]),
    ("Ed25519 (ring)", ["25519"]),
    ("RSA-2048 (ring big-number arithmetic)", ["bn_mul_mont", "bn_sqr", "sqrx8x", "mulx4x", "bn_postx",
                                              "bn_power", "bn_scatter", "bn_gather", "limbs_", "bigint",
                                              "ring::rsa", "bn_from_mont", "bn_mul", "ring_core"]),
    ("SQLite (bundled C library)", ["sqlite3", "wal", "pcache", "pager", "btree", "vdbe", "balance",
                                    "unixsync", "unixwrite", "unixread", "memjrnl", "findcell",
                                    "cellsize", "insertcell", "rebuildpage", "allocatespace"]),
    ("PostgreSQL client (sqlx-postgres)", ["sqlx_postgres"]),
    ("sqlx (other)", ["sqlx"]),
    ("MIME parsing (mail-parser)", ["mail_parser"]),
    ("rewriting and the read-back check", ["maskrelay::rewrite", "maskrelay::leak", "unicode_normal",
                                            "maskrelay::smtp::data", "quoted_printable", "base64",
                                            "utf8chunks", "from_utf8"]),
    ("memcpy / memmove / memchr", ["memcpy", "memmove", "memchr", "memset", "memcmp"]),
    ("allocator", ["malloc", "free", "realloc", "_int_", "alloc::", "unlink_chunk"]),
    ("tokio runtime, futex, channels", ["tokio", "flume", "futex", "pthread_mutex", "park"]),
]


def bucket_of(dso: str, sym: str) -> str:
    hay = f"{dso} {sym}".lower()
    for name, keys in BUCKETS:
        if any(k in hay for k in keys):
            return name
    return "other"


# Inclusive cost (the function and all it calls) of the parts of a message's way through the
# relay, from the DWARF call graphs: the largest "children" share of a symbol containing the
# anchor. Parts can nest (RSA inside DKIM inside the egress worker), so they do not add up.
ANCHORS = [
    ("delivery workers (all of egress)", "maskrelay::delivery::Workers::run"),
    ("DKIM signing (Signer::sign)", "maskrelay::delivery::dkim::Signer::sign"),
    ("RSA private-key operation (ring KeyPair::sign)", "ring::rsa::keypair::KeyPair::sign"),
    ("Ed25519 signing (ring)", "ring::ec::curve25519::ed25519::signing"),
    ("SMTP sessions (inbound, all)", "maskrelay::smtp::session::Session<B>::serve"),
    ("rewriting both copies and reading back", "maskrelay::smtp::transaction::rewrite_copies"),
    ("egress SMTP client", "maskrelay::delivery::client::"),
    ("SQLite statements (sqlite3_step)", "sqlite3_step"),
    ("SQLite commit (WAL frames and sync)", "sqlite3PagerCommitPhaseOne"),
    ("PostgreSQL driver", "sqlx_postgres::"),
    ("fsync / fdatasync", "sys_fdatasync"),
    ("fsync (fsync)", "sys_fsync"),
    ("system calls (all)", "entry_SYSCALL_64"),
]


def perf_report(data: Path, out: Path):
    """One pass over the samples (DWARF unwinding is slow): (self buckets, inclusive parts)."""
    rep = subprocess.run(["perf", "report", "-i", str(data), "--children", "--sort", "dso,sym",
                          "--stdio", "-g", "none", "--percent-limit", "0.05"],
                         capture_output=True, text=True).stdout
    out.write_text(rep)
    buckets: dict[str, float] = {}
    rows = []
    for line in rep.splitlines():
        parts = line.split(None, 4)
        if len(parts) < 4 or not parts[0].endswith("%") or not parts[1].endswith("%"):
            continue
        try:
            children, self_ = float(parts[0].rstrip("%")), float(parts[1].rstrip("%"))
        except ValueError:
            continue
        dso, sym = parts[2], " ".join(parts[3:])
        rows.append((children, sym))
        b = bucket_of(dso, sym)
        buckets[b] = buckets.get(b, 0.0) + self_
    found = []
    for name, anchor in ANCHORS:
        shares = [c for c, sym in rows if anchor in sym]
        if shares:
            found.append((name, max(shares)))
    return sorted(buckets.items(), key=lambda kv: -kv[1]), found


def profile(a, pkg, sink, sink_port, binary, keys, variants, sizes, sessions_l):
    if not shutil.which("perf"):
        sys.exit("perf not found (Debian: apt-get install linux-perf)")
    a.profile.mkdir(parents=True, exist_ok=True)
    for size_kb in sizes:
        for sessions in sessions_l:
            for v in variants:
                name = f"{size_kb}kb-{sessions}s-{v[0]}-{v[1]}"
                mr = Maskrelay(binary, a.work / "maskrelay", sink_port, v[0], keys[v[1]], a.pg, a.workers)
                data = a.profile / f"{name}.perf.data"
                try:
                    alias = mr.start()
                    perf = subprocess.Popen(["perf", "record", "-F", "199", "--call-graph", "dwarf,16384",
                                             "-p", str(mr.proc.pid),
                                             "-o", str(data)], stdout=subprocess.DEVNULL,
                                            stderr=subprocess.DEVNULL)
                    time.sleep(0.5)
                    r = measure(pkg, sink, mr.smtp_port, alias, a.messages, sessions, size_kb * 1024,
                                f"profile-{os.getpid()}-{name}", mr.ticks, mr.queued, a.deadline)
                    perf.send_signal(signal.SIGINT)
                    perf.wait(60)
                finally:
                    mr.stop()
                summary, parts = perf_report(data, a.profile / f"{name}.report.txt")
                print(f"\n### {size_kb} KB, {sessions} sessions, {v[0]}, {v[1]}: "
                      f"{r.cpu_ms:.2f} ms CPU per message, e2e {r.e2e or 0:.0f} msg/s, "
                      f"{'ok' if r.ok else 'FAILED ' + r.note}\n")
                print("Self time, by where the sampled instruction was:\n")
                print("| where | share of the relay's CPU samples | ms per message |")
                print("|---|---|---|")
                for b, pct in summary:
                    if pct >= 0.5:
                        print(f"| {b} | {pct:.1f} % | {pct / 100 * r.cpu_ms:.2f} |")
                print("\nInclusive time (the part and everything it calls; parts nest):\n")
                print("| part | share of the relay's CPU samples | ms per message |")
                print("|---|---|---|")
                for b, pct in parts:
                    print(f"| {b} | {pct:.1f} % | {pct / 100 * r.cpu_ms:.2f} |")


def print_table(rows, variants, a, pkg):
    print(f"\n{a.messages} messages per run, medians of {a.runs} interleaved rounds "
          f"(min-max in brackets), rates in msg/s, CPU in ms per message. Postfix {pkg.version()}.\n")
    print("| size | sessions | relay | accept | end to end | e2e vs Postfix | relay CPU/msg | "
          "+ PostgreSQL backends | CPU vs Postfix (with backends) | harness CPU/msg | "
          "CPU-bound ceiling | checks | load avg |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for size_kb, sessions, per in rows:
        pf = per[("postfix",)]
        pf_e2e, pf_cpu = med([r.e2e for r in pf]), med([r.cpu_ms for r in pf])
        names = [("direct",), ("postfix",)] + [("maskrelay",) + v for v in variants]
        for who in names:
            rs = per[who]
            label = {"direct": "source → sink", "postfix": "Postfix"}.get(who[0]) or \
                f"maskrelay {'SQLite' if who[1] == 'sqlite' else 'PostgreSQL'} {'RSA-2048' if who[2] == 'rsa' else 'Ed25519'}"
            e2e, cpu = med([r.e2e for r in rs]), med([r.cpu_ms for r in rs])
            dbc = med([r.db_cpu_ms for r in rs])
            ratio = f"{e2e / pf_e2e:.2f}×" if who[0] == "maskrelay" and e2e and pf_e2e else ""
            cratio = f"{cpu / pf_cpu:.2f}×" if who[0] == "maskrelay" and cpu and pf_cpu else ""
            if dbc is not None and cpu and pf_cpu:
                cratio += f" ({(cpu + dbc) / pf_cpu:.2f}×)"
            harness = med([r.harness_ms for r in rs])
            # What this CPU per message allows on this machine's CPUs if nothing waited:
            # every CPU busy with the harness, the relay and its database backends.
            ceiling = ""
            if harness is not None:
                total = harness + (cpu or 0) + (dbc or 0)
                ceiling = f"{os.cpu_count() * 1000 / total:,.0f}" if total else ""
            ok = sum(r.ok for r in rs)
            checks = f"{ok}/{len(rs)} ok" if ok == len(rs) else f"**{ok}/{len(rs)} ok**"
            accept = fmt_rate([r.accept for r in rs]) if who[0] != "direct" else fmt_rate([r.accept for r in rs])
            print(f"| {size_kb} KB | {sessions} | {label} | {accept} | {fmt_rate([r.e2e for r in rs])} | "
                  f"{ratio} | {fmt_ms([r.cpu_ms for r in rs]) if who[0] != 'direct' else ''} | "
                  f"{fmt_ms([r.db_cpu_ms for r in rs]) if dbc is not None else ''} | {cratio} | "
                  f"{fmt_ms([r.harness_ms for r in rs]) if harness is not None else ''} | {ceiling} | "
                  f"{checks} | {med([r.load for r in rs]):.2f} |")


if __name__ == "__main__":
    main()
