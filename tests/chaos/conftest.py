"""The scale-out fixtures (PostgreSQL database, moto S3, API and worker processes)."""

from scale.conftest import cluster, s3_endpoint, shared_env

__all__ = ["cluster", "s3_endpoint", "shared_env"]
