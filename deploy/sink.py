#!/usr/bin/env python3
"""A tiny SMTP sink for trying maskrelay locally: prints every message it receives.

Standard library only. Usage: python3 deploy/sink.py [PORT]   (default 2526)
"""
import asyncio
import sys


async def session(reader, writer):
    async def reply(line):
        writer.write(line.encode() + b"\r\n")
        await writer.drain()

    await reply("220 sink ESMTP")
    mail_from, rcpts = "", []
    while True:
        line = await reader.readline()
        if not line:
            break
        cmd = line.decode("utf-8", "replace").rstrip("\r\n")
        verb = cmd[:4].upper()
        if verb in ("EHLO", "HELO"):
            await reply("250 sink")
        elif verb == "MAIL":
            mail_from, rcpts = cmd[10:].strip(), []
            await reply("250 ok")
        elif verb == "RCPT":
            rcpts.append(cmd[8:].strip())
            await reply("250 ok")
        elif verb == "DATA":
            await reply("354 go ahead")
            data = []
            while True:
                l = await reader.readline()
                if not l or l == b".\r\n":
                    break
                data.append(l[1:] if l.startswith(b"..") else l)
            print(f"=== message from {mail_from} to {', '.join(rcpts)}", flush=True)
            print(b"".join(data).decode("utf-8", "replace"), flush=True)
            await reply("250 ok")
        elif verb == "QUIT":
            await reply("221 bye")
            break
        else:
            await reply("250 ok")
    writer.close()


async def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 2526
    server = await asyncio.start_server(session, "127.0.0.1", port)
    print(f"sink listening on 127.0.0.1:{port}", flush=True)
    async with server:
        await server.serve_forever()


asyncio.run(main())
