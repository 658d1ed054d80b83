"""The artifact store a deployment configured: `SCALEOT_STORAGE=local` (default) or `s3`."""

from __future__ import annotations

from model_owner_server.settings import Settings
from model_owner_server.storage.base import ArtifactStore
from model_owner_server.storage.local import LocalArtifactStore


def make_store(settings: Settings) -> ArtifactStore:
    """The local directory `<data_dir>/artifacts`, or the S3 bucket (checked now: a missing bucket, rejected
    credentials or an unreachable endpoint fail here with a message saying what to fix). S3 downloads for
    the ML code are cached under `<data_dir>/s3-cache`."""
    if settings.storage == "s3":
        from model_owner_server.storage.s3 import S3ArtifactStore  # boto3 only where S3 is used

        assert settings.s3_bucket  # the settings validator requires it
        return S3ArtifactStore(
            settings.s3_bucket, settings.s3_prefix, endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region, cache_dir=settings.data_dir / "s3-cache",
        )
    return LocalArtifactStore(settings.artifacts_dir)
