#!/usr/bin/env python3
"""Second opinion for tests/hostile.rs: finds an address in delivered mail with Python's
own `email` package and decoders written here, sharing no code with the relay (which
parses with Rust's mail-parser). Standard library only.

Reads a JSON list of jobs on stdin, writes a JSON list of results on stdout:

  job    {"name", "delivered": path, "sent": path or null, "needles": [...],
          "headers_only": bool}
  result {"name", "leaks": ["where: how", ...], "structure": [differences]}

An address is found case-insensitively: in the raw bytes; in the raw bytes after
quoted-printable decoding of the whole message; as base64 at each of the 3 alignments
(line breaks removed); in every header of every part, unfolded and RFC 2047-decoded,
with RFC 2231 parameters joined and decoded; in every part body after transfer and
charset decoding, then after HTML character references, percent-encoding, both in
turn, RFC 2047 words in the text, and format=flowed soft breaks. Each view is also read
as a person sees it: HTML rendered by Python's html.parser (text nodes joined across tags
and comments, the attribute values), NFKC (unicodedata) with invisible format characters
dropped, and the address syntax for the same mailbox reduced (white space and folding,
quotes, comments). Needles are looked for with their domain in both IDNA forms (the idna
codec).
"""

import base64
import binascii
import codecs
import email
import email.policy
import hashlib
import html
import html.parser
import json
import re
import sys
import unicodedata
import urllib.parse

ENCODED_WORD = re.compile(rb"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")
# Adjacent encoded words are joined: the whitespace between them is not text (RFC 2047 6.2).
BETWEEN_WORDS = re.compile(rb"(\?=)[ \t\r\n]+(?==\?)")


def decode_bytes(data, charset):
    """Text from bytes in `charset`; bytes a codec cannot read fall back to latin-1, so
    ASCII (the address) always survives."""
    charset = (charset or "").strip().strip('"').lower()
    if charset.startswith("utf-16") or charset.startswith("utf-32") or charset == "utf-7":
        try:
            return data.decode(charset)
        except (LookupError, UnicodeDecodeError):
            pass
    if charset:
        try:
            codecs.lookup(charset)
            return data.decode(charset, errors="replace")
        except (LookupError, UnicodeDecodeError):
            pass
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def decode_encoded_words(data):
    """RFC 2047 words wherever they occur (also glued to other text, as some readers
    accept), adjacent ones joined."""
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogateescape")
    data = BETWEEN_WORDS.sub(rb"\1", data)

    def one(m):
        charset = m.group(1).split(b"*")[0].decode("ascii", "replace")
        payload = m.group(3)
        try:
            if m.group(2) in b"bB":
                raw = base64.b64decode(payload + b"=" * (-len(payload) % 4))
            else:
                raw = re.sub(
                    rb"=([0-9A-Fa-f]{2})", lambda h: bytes([int(h.group(1), 16)]), payload.replace(b"_", b" ")
                )
        except (binascii.Error, ValueError):
            return m.group(0)
        return decode_bytes(raw, charset).encode("utf-8", "surrogateescape")

    return ENCODED_WORD.sub(one, data).decode("utf-8", "replace")


def qp_decode(data):
    data = re.sub(rb"=\r?\n", b"", data)
    return re.sub(rb"=([0-9A-Fa-f]{2})", lambda h: bytes([int(h.group(1), 16)]), data)


def unflow(text, delsp):
    """RFC 3676 4.2: a line ending in a space continues on the next one; with DelSp=yes
    that space is not text. Quote marks and space-stuffing of the next line go too."""
    sep = "" if delsp else " "
    return re.sub(r" \r?\n>*[ ]?", sep, text)


class Rendered(html.parser.HTMLParser):
    """What a browser shows of HTML: the text nodes, and the attribute values a reader
    sees or follows."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts = []

    def handle_data(self, data):
        self.parts.append(data)

    def handle_starttag(self, tag, attrs):
        for _, value in attrs:
            if value:
                self.parts.append(" " + value + " ")

    handle_startendtag = handle_starttag


def rendered(text):
    r = Rendered()
    try:
        r.feed(text)
        r.close()
    except Exception:  # noqa: BLE001 - a second opinion must not stop on bad HTML
        return text
    return "".join(r.parts)


# Unicode's Default_Ignorable_Code_Point (DerivedCoreProperties.txt), which unicodedata
# does not expose: shown as nothing.
INVISIBLE_RANGES = [
    (0x00AD, 0x00AD), (0x034F, 0x034F), (0x061C, 0x061C), (0x115F, 0x1160), (0x17B4, 0x17B5),
    (0x180B, 0x180F), (0x200B, 0x200F), (0x202A, 0x202E), (0x2060, 0x206F), (0x3164, 0x3164),
    (0xFE00, 0xFE0F), (0xFEFF, 0xFEFF), (0xFFA0, 0xFFA0), (0xFFF0, 0xFFF8), (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A), (0xE0000, 0xE0FFF),
]


def invisible(c):
    o = ord(c)
    return any(lo <= o <= hi for lo, hi in INVISIBLE_RANGES)


def squeeze(text, uncomment):
    """NFKC, invisible characters dropped, then white space, quotes, backslashes and
    (uncomment) parenthesized comments removed: the same mailbox in any address syntax."""
    out = []
    depth = 0
    for c in unicodedata.normalize("NFKC", text):
        if invisible(c):
            continue
        if c.isspace() or unicodedata.category(c) == "Cc" or c in "\"\\":
            continue
        if uncomment:
            if c == "(":
                depth += 1
                continue
            if c == ")" and depth:
                depth -= 1
                continue
            if depth:
                continue
        out.append(c)
    return "".join(out)


def text_views(text):
    """The text and what a reader or a mail client may turn it into."""
    views = [("text", text)]
    unescaped = html.unescape(text)
    views.append(("html-entities", unescaped))
    views.append(("percent", urllib.parse.unquote(text, errors="replace")))
    views.append(("html-entities+percent", urllib.parse.unquote(unescaped, errors="replace")))
    views.append(("rfc2047-in-text", decode_encoded_words(text)))
    views.append(("rfc2047+html-entities", html.unescape(decode_encoded_words(text))))
    shown = rendered(text)
    qp = qp_decode(text.encode("utf-8", "surrogateescape")).decode("utf-8", "replace")
    for how, view in [
        ("html.parser", shown),
        ("html.parser+percent", urllib.parse.unquote(shown, errors="replace")),
        ("text", text),
        ("quoted-printable", qp),
    ]:
        views.append((f"{how}, NFKC, address syntax", squeeze(view, False)))
        views.append((f"{how}, NFKC, comments removed", squeeze(view, True)))
    return views


def idna_forms(needle):
    forms = {needle.lower()}
    local, _, domain = needle.lower().rpartition("@")
    if local:
        for conv in (lambda d: d.encode("idna").decode("ascii"), lambda d: d.encode("ascii").decode("idna")):
            try:
                forms.add(f"{local}@{conv(domain).lower()}")
            except (UnicodeError, ValueError):
                pass
    return sorted(forms)


def base64_forms(needle):
    """The base64 text that must appear when `needle` is base64-encoded at offset 0, 1
    or 2 of a 3-byte group: only the characters no neighbouring byte influences."""
    forms = []
    for variant in {needle, needle.lower(), needle.upper()}:
        raw = variant.encode("utf-8")
        for k in range(3):
            enc = base64.b64encode(b"\0" * k + raw)
            start = -(-k * 8 // 6)
            end = (k + len(raw)) * 8 // 6
            forms.append(enc[start:end])
    return forms


class Finder:
    def __init__(self, needles):
        self.needles = [f for n in needles for f in idna_forms(n)]
        self.leaks = []

    def text(self, where, text):
        for how, view in text_views(text):
            low = view.lower()
            for n in self.needles:
                if n in low:
                    self.leaks.append(f"{where}: {n} ({how})")
                    return

    def raw(self, where, data):
        low = data.lower()
        for n in self.needles:
            if n.encode("utf-8") in low:
                self.leaks.append(f"{where}: {n} (raw bytes)")


def header_fields(part):
    """(name, unfolded raw value) for every header of `part`."""
    out = []
    for name, value in part._headers:
        if isinstance(value, str):
            raw = value.encode("utf-8", "surrogateescape")
        else:
            raw = str(value).encode("utf-8", "surrogateescape")
        out.append((name, re.sub(rb"\r?\n(?=[ \t])", b"", raw)))
    return out


def check_headers(finder, part, where):
    for name, raw in header_fields(part):
        w = f"{where} header {name}"
        finder.raw(w, raw)
        finder.text(w, decode_encoded_words(raw))
    # RFC 2231 parameters (continuations joined, charset applied) by the email package.
    for hname in ("content-type", "content-disposition"):
        if part.get(hname) is None:
            continue
        for key, value in part.get_params(header=hname, failobj=[]) or []:
            if isinstance(value, tuple):
                value = email.utils.collapse_rfc2231_value(value)
            finder.text(f"{where} {hname} parameter {key}", decode_encoded_words(str(value)))


def nested_from_encoded(part):
    """A message/rfc822 part sent with base64 or quoted-printable (RFC 2046 5.2.1 forbids
    it, readers decode it anyway): the message inside."""
    cte = (part.get("content-transfer-encoding") or "").strip().lower()
    if cte not in ("base64", "quoted-printable"):
        return None
    payload = part.get_payload()
    if isinstance(payload, list):
        payload = payload[0].as_bytes() if payload else b""
    elif isinstance(payload, str):
        payload = payload.encode("latin-1", "replace")
    data = base64.b64decode(re.sub(rb"\s", b"", payload) + b"==", validate=False) if cte == "base64" else qp_decode(payload)
    return email.message_from_bytes(data, policy=email.policy.compat32)


def walk(finder, part, where, headers_only, depth=0):
    check_headers(finder, part, where)
    if headers_only:
        return
    ctype = part.get_content_type()
    if ctype.startswith("message/"):
        inner = nested_from_encoded(part)
        if inner is not None:
            walk(finder, inner, f"{where}>decoded-message", headers_only, depth + 1)
            return
    if part.is_multipart():
        finder.text(f"{where} preamble", part.preamble or "")
        finder.text(f"{where} epilogue", part.epilogue or "")
        for i, sub in enumerate(part.get_payload()):
            walk(finder, sub, f"{where}.{i + 1}", headers_only, depth + 1)
        return
    data = part.get_payload(decode=True)
    if data is None:
        data = str(part.get_payload()).encode("utf-8", "surrogateescape")
    finder.raw(f"{where} body ({ctype}) decoded", data)
    text = decode_bytes(data, part.get_content_charset())
    finder.text(f"{where} body ({ctype})", text)
    if part.get_param("format", "").lower() == "flowed":
        delsp = part.get_param("delsp", "").lower() == "yes"
        finder.text(f"{where} body ({ctype}) unflowed", unflow(text, delsp))


def find_leaks(raw, needles, headers_only):
    finder = Finder(needles)
    if headers_only:
        head = re.split(rb"\r?\n\r?\n", raw, maxsplit=1)[0]
        finder.raw("header block", head)
        finder.text("header block", decode_encoded_words(re.sub(rb"\r?\n(?=[ \t])", b"", head)))
        msg = email.message_from_bytes(raw, policy=email.policy.compat32)
        walk(finder, msg, "message", True)
        return finder.leaks
    finder.raw("raw message", raw)
    finder.raw("raw message, quoted-printable decoded", qp_decode(raw))
    flat = re.sub(rb"[\r\n]", b"", raw)
    for n in needles:
        for form in base64_forms(n):
            if form in flat:
                finder.leaks.append(f"raw message: {n} (base64 {form.decode()})")
                break
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    walk(finder, msg, "message", False)
    return finder.leaks


def tree(part, depth=0):
    """(depth, content type, sha256 of the decoded body of a non-text leaf) per part."""
    ctype = part.get_content_type()
    if ctype.startswith("message/"):
        inner = nested_from_encoded(part)
        if inner is not None:
            return [(depth, ctype, None)] + tree(inner, depth + 1)
    if part.is_multipart():
        out = [(depth, ctype, None)]
        for sub in part.get_payload():
            out.extend(tree(sub, depth + 1))
        return out
    digest = None
    # A multipart whose boundary never comes, or a message/* the parser kept whole, is
    # shown as text: like text, it may be rewritten.
    if not ctype.startswith(("text/", "multipart/", "message/")):
        data = part.get_payload(decode=True)
        if data is None:
            data = str(part.get_payload()).encode("utf-8", "surrogateescape")
        digest = hashlib.sha256(data).hexdigest()
    return [(depth, ctype, digest)]


def structure_diff(sent, delivered):
    a = tree(email.message_from_bytes(sent, policy=email.policy.compat32))
    b = tree(email.message_from_bytes(delivered, policy=email.policy.compat32))
    if a == b:
        return []
    out = [f"{len(a)} parts sent, {len(b)} delivered"] if len(a) != len(b) else []
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            out.append(f"part {i + 1}: sent {x}, delivered {y}")
    return out


def main():
    jobs = json.load(sys.stdin)
    results = []
    for job in jobs:
        with open(job["delivered"], "rb") as f:
            delivered = f.read()
        leaks = find_leaks(delivered, job["needles"], job.get("headers_only", False))
        structure = []
        if job.get("sent"):
            with open(job["sent"], "rb") as f:
                structure = structure_diff(f.read(), delivered)
        results.append({"name": job["name"], "leaks": leaks, "structure": structure})
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
