#!/usr/bin/env python3
"""The cause of issue 9 item 3, without the relay: SQLite on a full disk, driven the way
sqlx 0.9 drives a pooled connection (its transaction depth counter, BEGIN/SAVEPOINT,
COMMIT/RELEASE, ROLLBACK/ROLLBACK TO). Needs root for the tmpfs.

    sudo python3 bench/diskfull_sqlite.py

What it shows (recorded in bench/RESULTS.md, "SQLite on a full disk"):
1. SQLITE_FULL at COMMIT rolls the transaction back inside SQLite; sqlx's ROLLBACK then
   fails ("no transaction is active") and its depth stays 1.
2. The next transaction on that connection is therefore a SAVEPOINT; when its RELEASE
   fails, ROLLBACK TO SAVEPOINT leaves a real transaction open, holding the write lock.
3. From then on every other connection gets "database is locked", also after the space
   is freed, and the poisoned connection's "commits" are savepoint releases: the relay
   answered 250 for them, and they are never committed.
"""

import os
import sqlite3
import subprocess
import tempfile

mnt = tempfile.mkdtemp(prefix="diskfull-")
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", mnt], check=True)
try:
    db = os.path.join(mnt, "t.db")
    c = sqlite3.connect(db, isolation_level=None)
    c.execute("PRAGMA journal_mode=WAL")
    c.execute("PRAGMA synchronous=FULL")
    c.execute("CREATE TABLE q (id INTEGER PRIMARY KEY, b BLOB)")
    for _ in range(5):
        c.execute("INSERT INTO q (b) VALUES (?)", (os.urandom(8000),))
    filler = os.path.join(mnt, "filler")
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    for chunk in (65536, 4096, 512, 1):
        try:
            while True:
                os.write(fd, b"x" * chunk)
        except OSError:
            pass
    os.close(fd)
    print("--- disk full")

    depth = 0  # sqlx's transaction depth for this connection

    def step(sql, *args):
        try:
            c.execute(sql, *args)
            print(f"ok   {sql[:42]:42} | SQLite in transaction: {c.in_transaction}")
            return True
        except sqlite3.Error as e:
            print(f"ERR  {sql[:42]:42} | {e}; SQLite in transaction: {c.in_transaction}")
            return False

    def transaction(payload):
        """sqlx: begin(), one INSERT, commit(); on error the Transaction's drop rolls back."""
        global depth
        if step("BEGIN" if depth == 0 else f"SAVEPOINT _sqlx_savepoint_{depth}"):
            depth += 1
        ok = step("INSERT INTO q (b) VALUES (?)", (payload,))
        if ok:
            ok = step("COMMIT" if depth == 1 else f"RELEASE SAVEPOINT _sqlx_savepoint_{depth - 1}")
            if ok:
                depth -= 1
        if not ok and step("ROLLBACK" if depth == 1 else f"ROLLBACK TO SAVEPOINT _sqlx_savepoint_{depth - 1}"):
            depth -= 1
        print(f"  => the relay answers {'250' if ok else '451'}; sqlx depth {depth}")

    for _ in range(3):
        transaction(os.urandom(8000))
    os.remove(filler)
    print("--- space freed")
    other = sqlite3.connect(db, isolation_level=None, timeout=1)
    for _ in range(2):
        transaction(b"accepted after the disk was freed")
        try:
            other.execute("INSERT INTO q (b) VALUES (x'00')")
            print("another connection writes: ok")
        except sqlite3.Error as e:
            print(f"another connection writes: {e}")
    n = other.execute("SELECT COUNT(*) FROM q WHERE b = ?", (b"accepted after the disk was freed",)).fetchone()[0]
    print(f"committed rows of the 250'd transactions, as another connection sees them: {n}")
    c.close()
    n = other.execute("SELECT COUNT(*) FROM q WHERE b = ?", (b"accepted after the disk was freed",)).fetchone()[0]
    print(f"... after the poisoned connection is closed (a restart): {n}")
    other.close()
finally:
    subprocess.run(["umount", "-l", mnt])
    os.rmdir(mnt)
