#!/usr/bin/env python3
"""A real SMTP server for tests: aiosmtpd, storing every message it accepts as an .eml file.

    smtp_sink.py --directory DIR [--port PORT] [--reject CODE]

Listens on 127.0.0.1:PORT (0, the default, picks a free port). Once it accepts connections it
prints `listening on <port>` on stdout, then one `connection` line per SMTP session, so a test
can tell whether a client connected at all. Each accepted message is written to DIR as
`<n>.eml` atomically (a hidden temporary name, then a rename), so a reader never sees half a
file. With `--reject CODE` every RCPT and DATA is answered with that SMTP code (550: a permanent
refusal, 451: a transient one) and nothing is stored. SIGTERM or SIGINT stops it (exit 0).

Runs on the interpreter of `.venv-tools`, which `scripts/services` creates with aiosmtpd.
"""

import argparse
import itertools
import os
import signal
import sys
import threading
import time

from aiosmtpd.controller import Controller


def announce(line):
    print(line, flush=True)


class Sink:
    """The aiosmtpd handler: stores messages, or refuses every recipient and message."""

    def __init__(self, directory, reject):
        self.directory = directory
        self.reject = reject
        self.sequence = itertools.count(1)

    def refusal(self, what):
        if self.reject is None:
            return None
        status = f"{self.reject // 100}.0.0"
        return f"{self.reject} {status} refused by the test sink: {what}"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        refusal = self.refusal(f"<{address}>")
        if refusal is not None:
            return refusal
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        refusal = self.refusal("message")
        if refusal is not None:
            return refusal
        name = f"{time.time_ns()}-{next(self.sequence)}.eml"
        temporary = os.path.join(self.directory, f".{name}.tmp")
        with open(temporary, "wb") as file:
            file.write(envelope.original_content)
            file.flush()
            os.fsync(file.fileno())
        os.rename(temporary, os.path.join(self.directory, name))
        return "250 Message accepted for delivery"


class SinkController(Controller):
    """A Controller that can listen on port 0 (aiosmtpd's needs the port before binding) and
    reports each session once it has announced its port."""

    announcing = False

    def _create_server(self):
        async def create():
            server = await self.loop.create_server(
                self._factory_invoker, host=self.hostname, port=self.port, ssl=self.ssl_context
            )
            self.port = server.sockets[0].getsockname()[1]
            return server

        return create()

    def factory(self):
        # Called once per connection; the controller's own start-up probe is not reported.
        if self.announcing:
            announce("connection")
        return super().factory()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--directory", required=True, help="where accepted messages are written")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--reject", type=int, default=None, help="answer every RCPT and DATA with this code")
    arguments = parser.parse_args()
    if arguments.reject is not None and not 400 <= arguments.reject <= 599:
        parser.error("--reject takes a 4xx or 5xx SMTP code")
    os.makedirs(arguments.directory, exist_ok=True)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    controller = SinkController(
        Sink(arguments.directory, arguments.reject),
        hostname="127.0.0.1",
        port=arguments.port,
        server_hostname="sink.test",
    )
    controller.start()
    controller.announcing = True
    announce(f"listening on {controller.port}")
    try:
        # Lock waits are interrupted by signals on POSIX, so this wakes as soon as one arrives.
        stop.wait()
    finally:
        controller.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
