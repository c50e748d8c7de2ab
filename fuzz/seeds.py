#!/usr/bin/env python3
"""Writes the seed inputs of the fuzz targets into seeds/<target>/ (not committed: the
minimized corpus in corpus/<target>/ is). Run from fuzz/: python3 seeds.py"""
import glob
import os
import shutil

here = os.path.dirname(os.path.abspath(__file__))
tests = os.path.join(here, "..", "tests", "corpus")


def write(target, name, data):
    d = os.path.join(here, "seeds", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


shutil.rmtree(os.path.join(here, "seeds"), ignore_errors=True)

# smtp_session: first byte = prefix (0 none, 1 EHLO, 2 EHLO MAIL RCPT DATA) and chunking seed.
ENDINGS = [b"\n.\n", b"\n.\r\n", b"\r.\r", b"\r.\n", b"\r.\r\n", b"\r\n.\n", b"\r\n.\r",
           b"\r\n.\r\r\n", b"\r\n.\r\r\r\n", b"\r\r\n.\r\r\n", b"\n\r.\r\n", b"\n\r.\n\r",
           b"\r\n\x00.\r\n", b"\r\n.\x00\r\n", b"\r\n.\r\x00\n", b"\r\x00\n.\r\n",
           b"\r\n .\r\n", b"\r\n. \r\n", b"\r\n..\r\n", b"\n\n.\n\n", b"\r\n.\n\r\n",
           b"\x00\r\n.\r\n\x00", b"\r\n.\r\n\r"]
SMUGGLED = (b"MAIL FROM:<orders@acme.example>\r\nRCPT TO:<so1x@relay.test>\r\nDATA\r\n"
            b"From: orders@acme.example\r\nSubject: smuggled\r\n\r\nsmuggled\r\n.\r\nNOOP\r\nQUIT\r\n")
for i, e in enumerate(ENDINGS):
    body = b"From: Acme <orders@acme.example>\r\nTo: so1x@relay.test\r\nSubject: outer\r\n\r\nHello" + e
    write("smtp_session", f"smuggle-{i:02}", bytes([2 + 3 * i]) + body + SMUGGLED)
conv = (b"EHLO client.test\r\nMAIL FROM:<orders@acme.example> SIZE=100\r\nRCPT TO:<so1x@relay.test>\r\n"
        b"RCPT TO:<nobody@relay.test>\r\nRCPT TO:<x@elsewhere.example>\r\nDATA\r\n"
        b"From: orders@acme.example\r\nSubject: hi\r\n\r\n..dot\r\n.\r\nRSET\r\nVRFY x\r\nHELP\r\n"
        b"NOOP\r\nSTARTTLS\r\nAUTH PLAIN AGF1AHA=\r\nBDAT 10 LAST\r\nQUIT\r\n")
write("smtp_session", "conversation", b"\x00" + conv)
write("smtp_session", "conversation-lf", b"\x03" + conv.replace(b"\r\n", b"\n"))
write("smtp_session", "pipelined", b"\x01MAIL FROM:<orders@acme.example>\r\nRCPT TO:<so1x@relay.test>\r\nDATA\r\n"
      b"Subject: p\r\n\r\nbody\r\n.\r\nMAIL FROM:<>\r\nRCPT TO:<bounce+abc@relay.test>\r\nDATA\r\nx\r\n.\r\nQUIT\r\n")
write("smtp_session", "http", b"\x00GET / HTTP/1.1\r\nHost: x\r\n\r\n")
write("smtp_session", "bare-cr", b"\x01MAIL FROM:<a\rb@acme.example>\r\nNOOP\r\n")
write("smtp_session", "long-line", b"\x01NOOP " + b"x" * 4100 + b"\r\nNOOP\r\n")
write("smtp_session", "errors", b"\x01" + b"FOO\r\n" * 12)
write("smtp_session", "received", b"\x02" + b"Received: from x\r\n" * 51 + b"\r\nbody\r\n.\r\n")
write("smtp_session", "params", b"\x01MAIL FROM:<orders@acme.example> BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=x\r\n"
      b"RCPT TO:<so1x@relay.test> NOTIFY=NEVER ORCPT=rfc822;x@y\r\nRCPT TO:<so1x@relay.test> FOO=bar\r\nNOOP\r\n")

# rewrite: the hostile and cpython corpora, the shopper writing to the store.
for path in sorted(glob.glob(os.path.join(tests, "hostile", "*.eml"))):
    write("rewrite", os.path.basename(path), open(path, "rb").read())
for path in sorted(glob.glob(os.path.join(tests, "cpython", "msg_*.txt"))):
    write("rewrite", "cpython-" + os.path.basename(path), open(path, "rb").read())

# dsn: DSNs of several shapes, and the cpython corpus's reports.
dsn = (b"From: MAILER-DAEMON@mx.example\r\nTo: bounce+abc@relay.test\r\nSubject: Undelivered\r\n"
       b"MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n"
       b"--b\r\nContent-Type: text/plain\r\n\r\nsorry\r\n--b\r\nContent-Type: message/delivery-status\r\n\r\n"
       b"Reporting-MTA: dns; mx.example\r\n\r\nFinal-Recipient: rfc822; jane@example.com\r\nAction: failed\r\n"
       b"Status: 5.1.1\r\nDiagnostic-Code: smtp; 550 5.1.1 no such user\r\n\r\n--b\r\n"
       b"Content-Type: message/rfc822-headers\r\n\r\nSubject: x\r\n\r\n--b--\r\n")
write("dsn", "failed", dsn)
write("dsn", "delayed", dsn.replace(b"failed", b"delayed").replace(b"5.1.1", b"4.4.1"))
write("dsn", "global", dsn.replace(b"message/delivery-status", b"message/global-delivery-status"))
write("dsn", "base64", dsn.replace(b"message/delivery-status\r\n",
      b"message/delivery-status\r\nContent-Transfer-Encoding: base64\r\n").replace(
      b"Reporting-MTA: dns; mx.example\r\n\r\nFinal-Recipient: rfc822; jane@example.com\r\nAction: failed\r\n"
      b"Status: 5.1.1\r\nDiagnostic-Code: smtp; 550 5.1.1 no such user\r\n",
      b"UmVwb3J0aW5nLU1UQTogZG5zOyBteC5leGFtcGxlDQoNCkFjdGlvbjogZmFpbGVkDQpTdGF0dXM6IDUuMS4xDQo=\r\n"))
write("dsn", "autoreply", b"Subject: out of office\r\n\r\nback monday\r\n")
for name in ["msg_05.txt", "msg_16.txt", "msg_25.txt", "msg_43.txt"]:
    write("dsn", "cpython-" + name, open(os.path.join(tests, "cpython", name), "rb").read())
