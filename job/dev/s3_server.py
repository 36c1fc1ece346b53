"""A local S3-compatible server for Tansu's ``s3://`` storage (tests, bench): moto's S3,
with every write request (PUT, POST, DELETE) handled under one lock.

``python -m job.dev.s3_server --host 127.0.0.1 --port PORT``; started and owned by
``job.dev.broker.S3Server``, never needed by the job itself.

Why not ``moto_server`` as it is: Tansu keeps its per-partition watermarks and its producer
sequence numbers in JSON objects that it updates with conditional PUTs (``If-Match`` on the
ETag it read, ``If-None-Match: *`` for new objects), i.e. optimistic concurrency. moto checks
the condition and then stores the object in two steps, and its server handles requests on
concurrent threads, so two concurrent updates of the same object could both succeed and one
of them was lost. Seen with plain ``moto_server`` (docs/DESIGN.md#tansu): with an idempotent
producer writing to two partitions at once, Tansu answered some batches with
DUPLICATE_SEQUENCE_NUMBER (the client reports offset -1 and success) without storing them,
i.e. acknowledged records went missing, with no broker restart at all. Serializing the
writes makes each conditional PUT atomic, as S3 guarantees (reads run concurrently: moto
replaces an object in one step).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m job.dev.s3_server",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    # werkzeug logs a line per request: a burst would write one per stored batch
    logging.basicConfig(level=logging.ERROR, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)

    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import run_simple

    app = DomainDispatcherApplication(create_backend_app)
    lock = threading.Lock()

    def serialized(environ, start_response):
        if environ.get("REQUEST_METHOD") in ("GET", "HEAD"):  # reads replace nothing
            return app(environ, start_response)
        with lock:  # the whole write, the body included: conditional PUTs are atomic
            return list(app(environ, start_response))

    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    run_simple(args.host, args.port, serialized, threaded=True, request_handler=MotoRequestHandler)
    return 0


if __name__ == "__main__":
    sys.exit(main())
