"""A real S3-compatible server (moto's standalone server) on 127.0.0.1, for s3fs as the client."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager

# Dummy credentials of the local server: never real ones.
S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def moto_s3_server() -> Iterator[str]:
    """Yields the endpoint URL; the environment points boto/s3fs at it while the server runs."""
    import s3fs
    from moto.server import ThreadedMotoServer

    # s3fs caches filesystems by their arguments; one made against an earlier server (its endpoint came
    # from the environment) would otherwise be reused and point at a port that is gone.
    s3fs.S3FileSystem.clear_instance_cache()

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    saved = {k: os.environ.get(k) for k in [*S3_ENV, "AWS_ENDPOINT_URL"]}
    os.environ.update(S3_ENV, AWS_ENDPOINT_URL=endpoint)
    try:
        yield endpoint
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        server.stop()
        s3fs.S3FileSystem.clear_instance_cache()


def make_bucket(name: str):
    import s3fs

    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    if not fs.exists(name):
        fs.mkdir(name)
    return fs
