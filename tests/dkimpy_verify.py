#!/usr/bin/env python3
"""Independent DKIM check with dkimpy: reads a message on stdin, verifies its first
DKIM-Signature against the TXT record given as argv[2] for the name argv[1].
Exit 0 when it verifies, 1 when it does not."""
import sys

import dkim

name, record = sys.argv[1], sys.argv[2].encode()


def dnsfunc(qname, timeout=5):
    q = qname.decode() if isinstance(qname, bytes) else qname
    return record if q.rstrip(".") == name.rstrip(".") else None


message = sys.stdin.buffer.read()
ok = dkim.verify(message, dnsfunc=dnsfunc)
print("dkimpy: pass" if ok else "dkimpy: fail")
sys.exit(0 if ok else 1)
