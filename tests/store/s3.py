"""A local S3-compatible server for tests: moto's server mode (``ThreadedMotoServer``).

It speaks the S3 HTTP API on a loopback port; batchd reaches it through the
standard AWS settings, exactly as it would reach AWS S3 or MinIO.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import boto3
from moto.server import ThreadedMotoServer

from harness import free_port

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}


@contextmanager
def moto_s3() -> Iterator[str]:
    """A running ThreadedMotoServer; yields its endpoint URL."""
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def new_bucket(endpoint: str) -> str:
    name = f"batchd-{secrets.token_hex(4)}"
    client(endpoint).create_bucket(Bucket=name)
    return name


def client(endpoint: str) -> object:
    return boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    ).client("s3", endpoint_url=endpoint)


def env_for(endpoint: str) -> dict[str, str]:
    """The AWS_* variables a batchd process needs to use this server."""
    return {**CREDENTIALS, "AWS_ENDPOINT_URL": endpoint}
