"""Model registry on S3-compatible storage: immutable versions and a champion pointer.

Layout (see ARCHITECTURE.md)::

    s3://<bucket>/models/<version>/model.keras
    s3://<bucket>/models/<version>/manifest.json   written last: a version is complete iff present
    s3://<bucket>/models/champion.json             {version, sha256, promoted_at, previous,
                                                    history}
"""

from __future__ import annotations

import json
import logging
import mimetypes
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from boto3.exceptions import RetriesExceededError
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from model.contract import MODEL_FILE
from model.errors import IntegrityError, RegistryError, StoreUnavailable
from model.files import sha256_file
from model.s3 import S3Client, make_s3_client, s3_error_code

if TYPE_CHECKING:
    from model.settings import Settings

logger = logging.getLogger(__name__)

MODELS_PREFIX = "models"
MANIFEST_FILE = "manifest.json"
CHAMPION_KEY = f"{MODELS_PREFIX}/champion.json"


#: Former champions remembered in the pointer, for repeated rollbacks.
HISTORY_LENGTH = 20


@dataclass(frozen=True)
class ChampionPointer:
    """The current champion as recorded in ``champion.json``.

    ``history`` lists former champions, most recent first (``previous`` is its head);
    pointers written before it existed read back with an empty one.
    """

    version: str
    sha256: str
    promoted_at: str
    previous: str | None
    history: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ChampionPointer:
        """Read a pointer as stored (``history`` is a JSON list)."""
        return cls(**{**data, "history": tuple(data.get("history") or ())})

    def to_json(self) -> dict[str, Any]:
        """The pointer as stored."""
        return {**self.__dict__, "history": list(self.history)}


@dataclass(frozen=True)
class Pruned:
    """What :meth:`ModelRegistry.prune` deleted (or would delete)."""

    versions: list[str]
    incomplete: list[str]


def new_version_id(content_sha256: str) -> str:
    """A sortable version id: UTC time to the microsecond plus the model's content hash.

    Args:
        content_sha256: hex sha256 of the model file.

    Returns:
        e.g. ``20261124T101500123456Z-3f9a1c2e``; ids sort in publishing order, and the
        suffix tells at a glance which versions hold the same model.
    """
    return f"{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}-{content_sha256[:8]}"


def _content_type(path: Path) -> str:
    """The MIME type to store with a file, so a browser shows a report page instead of saving it."""
    return mimetypes.guess_type(path.name)[0] or "application/octet-stream"


def _is_missing(error: ClientError) -> bool:
    return s3_error_code(error) in {"404", "NoSuchKey", "NotFound"}


def _is_transient(error: Exception) -> bool:
    """Whether a failed call may succeed later: the store was unreachable or overloaded.

    boto3 has already retried these itself (standard mode); what is left is an outage that
    outlasted those attempts, which the publish task retries again with a longer backoff.
    """
    # s3transfer's downloads give up with RetriesExceededError when the store goes away.
    if isinstance(error, BotoConnectionError | HTTPClientError | RetriesExceededError):
        return True
    if isinstance(error, ClientError):
        return int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)) >= 500
    return False


def _is_precondition_failed(error: ClientError) -> bool:
    return s3_error_code(error) in {"412", "PreconditionFailed", "ConditionalRequestConflict"}


def _applied_before(key: str) -> None:
    """Log a conditional write whose 412 came from our own resend of an applied request.

    boto3 resends a ``PutObject`` whose reply was lost (read timeout, 5xx); when the first
    attempt was stored, the resend's condition fails. What is stored was compared with what was
    written before calling this, so the write succeeded.
    """
    logger.info("%s: the store had applied the first attempt; its reply was lost", key)


class ModelRegistry:
    """Versions and the champion pointer in one bucket.

    Args:
        client: a boto3 S3 client.
        bucket: the bucket name.
    """

    def __init__(self, client: S3Client, bucket: str) -> None:
        self.client = client
        self.bucket = bucket

    @classmethod
    def from_settings(cls, settings: Settings, timeout: float | None = None) -> ModelRegistry:
        """Build a registry for the configured endpoint and bucket.

        Args:
            settings: platform settings.
            timeout: see :func:`make_s3_client`.

        Returns:
            The registry (no network call is made yet).
        """
        return cls(make_s3_client(settings, timeout), settings.s3_bucket)

    def uri(self, key: str) -> str:
        """The ``s3://`` URI of a key in this bucket."""
        return f"s3://{self.bucket}/{key}"

    def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist.

        Raises:
            RegistryError: if the store cannot be reached or refuses.
        """
        try:
            self.client.head_bucket(Bucket=self.bucket)
            return
        except ClientError as error:
            if not _is_missing(error) and s3_error_code(error) != "NoSuchBucket":
                raise self._failure(error, f"bucket {self.bucket}") from error
        except BotoCoreError as error:
            raise self._failure(error, f"bucket {self.bucket}") from error
        try:
            self.client.create_bucket(Bucket=self.bucket)
        except ClientError as error:
            if s3_error_code(error) not in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
                raise self._failure(error, f"bucket {self.bucket}") from error

    def _failure(self, error: Exception, what: str) -> RegistryError:
        """The error to raise for a failed store call: transient ones say so, for retries."""
        endpoint = self.client.meta.endpoint_url
        message = (
            f"cannot access {what} at {endpoint}: {error}; check that the store is running "
            "(`fer services up`) or that FER_S3_ENDPOINT_URL, FER_S3_BUCKET and the "
            "FER_S3_* credentials are right"
        )
        return StoreUnavailable(message) if _is_transient(error) else RegistryError(message)

    def get_json(self, key: str) -> tuple[dict[str, Any], str] | None:
        """A JSON object and its ETag; None when the key does not exist.

        Raises:
            StoreUnavailable: the store did not answer (transient).
            RegistryError: any other store failure.
        """
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=key)
        except ClientError as error:
            if _is_missing(error):
                return None
            raise self._failure(error, self.uri(key)) from error
        except BotoCoreError as error:
            raise self._failure(error, self.uri(key)) from error
        return json.loads(response["Body"].read()), response["ETag"]

    def put_json(self, key: str, data: dict[str, Any]) -> str:
        """Write a small JSON object (a report's record); it may replace an earlier one.

        Returns:
            Its ``s3://`` URI.

        Raises:
            StoreUnavailable: the store did not answer (transient).
            RegistryError: any other store failure.
        """
        try:
            self.client.put_object(
                Bucket=self.bucket, Key=key, Body=json.dumps(data, indent=1).encode(),
                ContentType="application/json",
            )  # fmt: skip
        except (ClientError, BotoCoreError) as error:
            raise self._failure(error, self.uri(key)) from error
        return self.uri(key)

    def list_keys(self, prefix: str) -> list[str]:
        """Every key under ``prefix``, sorted.

        Raises:
            StoreUnavailable: the store did not answer (transient).
            RegistryError: any other store failure.
        """
        keys: list[str] = []
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                keys += [item["Key"] for item in page.get("Contents", [])]
        except (ClientError, BotoCoreError) as error:
            raise self._failure(error, self.uri(prefix)) from error
        return sorted(keys)

    def publish_version(
        self, model_path: Path, manifest: dict[str, Any], extra_files: Sequence[Path] = ()
    ) -> str:
        """Upload a model as a new immutable version; the manifest is written last.

        Args:
            model_path: the ``.keras`` file.
            manifest: metrics, lineage and config; file hashes and the version are added here.
            extra_files: files stored beside the model (model card, ...), hashed likewise.

        Returns:
            The new version id.

        Raises:
            RegistryError: if the upload fails or the version already exists.
        """
        digest = sha256_file(model_path)
        version = new_version_id(digest)
        prefix = f"{MODELS_PREFIX}/{version}"
        model_key = f"{prefix}/{MODEL_FILE}"
        size = model_path.stat().st_size
        files = {MODEL_FILE: {"sha256": digest, "bytes": size}}
        files |= {
            p.name: {"sha256": sha256_file(p), "bytes": p.stat().st_size} for p in extra_files
        }
        full_manifest = {
            **manifest,
            "version": version,
            "created_at": datetime.now(UTC).isoformat(),
            "files": files,
        }
        try:
            for path in extra_files:
                self._create(f"{prefix}/{path.name}", path, files[path.name]["sha256"])
            self._create(model_key, model_path, digest)
            stored = self.client.head_object(Bucket=self.bucket, Key=model_key)
            if stored["ContentLength"] != size:
                raise RegistryError(
                    f"{self.uri(model_key)} holds {stored['ContentLength']} bytes, expected {size}"
                )
            # Create-once: a version's manifest is never overwritten.
            self._create_manifest(f"{prefix}/{MANIFEST_FILE}", full_manifest)
        except ClientError as error:
            raise self._failure(error, self.uri(prefix)) from error
        except BotoCoreError as error:
            raise self._failure(error, self.uri(prefix)) from error
        logger.info("published %s (%s)", self.uri(prefix), digest[:12])
        return version

    def _create(self, key: str, path: Path, digest: str) -> None:
        """Write one file of a new version, refusing to replace anything already there.

        A single conditional ``PutObject`` (``If-None-Match: *``), not ``upload_file``:
        s3transfer does not pass the condition on, and model files are far below
        ``PutObject``'s 5 GB limit. The body is a file handle, so retries re-read it.
        """
        try:
            with path.open("rb") as body:
                self.client.put_object(
                    Bucket=self.bucket,
                    Key=key,
                    Body=body,
                    ContentType=_content_type(path),
                    Metadata={"sha256": digest},
                    IfNoneMatch="*",
                )
        except ClientError as error:
            if not _is_precondition_failed(error):
                raise
            stored = self.client.head_object(Bucket=self.bucket, Key=key)
            if stored.get("Metadata", {}).get("sha256") != digest:
                raise self._exists(key) from error
            _applied_before(key)

    def _create_manifest(self, key: str, manifest: dict[str, Any]) -> None:
        """Write a version's manifest once; like :meth:`_create`, a resend of it is no error."""
        body = json.dumps(manifest, indent=2).encode()
        try:
            self.client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=body,
                ContentType="application/json",
                IfNoneMatch="*",
            )
        except ClientError as error:
            if not _is_precondition_failed(error):
                raise
            if self._stored_bytes(key) != body:
                raise self._exists(key) from error
            _applied_before(key)

    def _stored_bytes(self, key: str) -> bytes | None:
        """What a small object holds now, or None if it does not exist."""
        try:
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except ClientError as error:
            if _is_missing(error):
                return None
            raise

    def _exists(self, key: str) -> RegistryError:
        return RegistryError(
            f"{self.uri(key)} already holds other content than this publish was about to write: "
            "versions are never overwritten; publish again for a new version id"
        )

    def upload_folder(self, folder: Path, prefix: str, exclude: tuple[str, ...] = ()) -> str:
        """Upload every file under ``folder`` to ``<prefix>/`` (reports, Data Docs).

        Args:
            folder: local folder.
            prefix: key prefix in the bucket, without a trailing slash.
            exclude: file names to skip.

        Returns:
            The ``s3://`` URI of the prefix.

        Raises:
            RegistryError: if an upload fails.
        """
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            if path.name not in exclude:
                self.upload_file(path, f"{prefix}/{path.relative_to(folder).as_posix()}")
        return self.uri(prefix)

    def upload_file(self, path: Path, key: str) -> str:
        """Upload one report file (a plot, a page); it may replace an earlier copy.

        Args:
            path: local file.
            key: its key in the bucket.

        Returns:
            The file's ``s3://`` URI.

        Raises:
            RegistryError: if the upload fails.
        """
        try:
            self.client.upload_file(
                str(path), self.bucket, key, ExtraArgs={"ContentType": _content_type(path)}
            )
        except (ClientError, BotoCoreError) as error:
            raise self._failure(error, self.uri(key)) from error
        return self.uri(key)

    def presigned_url(self, key: str, expires_seconds: int = 7 * 24 * 3600) -> str:
        """A link that reads one object without credentials until it expires.

        Args:
            key: the object's key.
            expires_seconds: lifetime; S3's signature version 4 allows at most 7 days.

        Returns:
            An http(s) URL (computed locally; nothing is sent to the store).
        """
        return self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=expires_seconds
        )

    def read_manifest(self, version: str) -> dict[str, Any]:
        """The manifest of a complete version.

        Args:
            version: version id.

        Returns:
            The manifest.

        Raises:
            RegistryError: if the version does not exist or is incomplete.
        """
        found = self.get_json(f"{MODELS_PREFIX}/{version}/{MANIFEST_FILE}")
        if found is None:
            raise RegistryError(
                f"model version {version!r} has no manifest in {self.uri(MODELS_PREFIX)}: it "
                "does not exist or was never completed; list versions with `fer models`"
            )
        return found[0]

    def list_versions(self) -> list[str]:
        """Complete versions (those with a manifest), oldest first.

        Returns:
            Version ids.
        """
        keys = (key.split("/") for key in self.list_keys(f"{MODELS_PREFIX}/"))
        return sorted(parts[1] for parts in keys if len(parts) == 3 and parts[2] == MANIFEST_FILE)

    def champion(self) -> ChampionPointer | None:
        """The current champion, or None when nothing was promoted yet."""
        found = self.get_json(CHAMPION_KEY)
        return None if found is None else ChampionPointer.from_json(found[0])

    def promote(self, version: str) -> ChampionPointer:
        """Point the champion at a complete version with a compare-and-swap write.

        Args:
            version: the version to promote.

        Returns:
            The new pointer; the replaced champion heads its history.

        Raises:
            RegistryError: if the version is incomplete or another promotion won the race.
        """
        current = self.get_json(CHAMPION_KEY)
        if current is not None and current[0]["version"] == version:
            # Already champion (a retried call whose first write landed): keep `previous`.
            return ChampionPointer.from_json(current[0])
        history: tuple[str, ...] = ()
        if current is not None:
            replaced = ChampionPointer.from_json(current[0])
            history = (replaced.version, *replaced.history)
        return self._swap(version, history, current)

    def rollback(self) -> ChampionPointer:
        """Make the previous champion the champion again (compare-and-swap).

        The rolled-back version leaves the history, so calling this again goes one further
        back.

        Returns:
            The new pointer.

        Raises:
            RegistryError: if there is no champion or no previous one, or the pointer
                changed meanwhile.
        """
        current = self.get_json(CHAMPION_KEY)
        if current is None:
            raise RegistryError("there is no champion to roll back; promote a version first")
        pointer = ChampionPointer.from_json(current[0])
        if not pointer.history:
            raise RegistryError(
                f"champion {pointer.version} has no previous champion to roll back to; "
                "promote a version by id with `fer models promote VERSION`"
            )
        return self._swap(pointer.history[0], pointer.history[1:], current)

    def _swap(
        self, version: str, history: tuple[str, ...], current: tuple[dict[str, Any], str] | None
    ) -> ChampionPointer:
        """Write the pointer for ``version`` if it is still ``current`` (by ETag)."""
        manifest = self.read_manifest(version)
        history = tuple(v for v in history if v != version)[:HISTORY_LENGTH]
        pointer = ChampionPointer(
            version=version,
            sha256=manifest["files"][MODEL_FILE]["sha256"],
            promoted_at=datetime.now(UTC).isoformat(),
            previous=history[0] if history else None,
            history=history,
        )
        condition = {"IfNoneMatch": "*"} if current is None else {"IfMatch": current[1]}
        body = json.dumps(pointer.to_json(), indent=2).encode()
        try:
            self.client.put_object(
                Bucket=self.bucket,
                Key=CHAMPION_KEY,
                Body=body,
                ContentType="application/json",
                **condition,
            )
        except ClientError as error:
            if not _is_precondition_failed(error):
                raise self._failure(error, self.uri(CHAMPION_KEY)) from error
            try:
                stored = self._stored_bytes(CHAMPION_KEY)
            except (ClientError, BotoCoreError) as reading:
                raise self._failure(reading, self.uri(CHAMPION_KEY)) from reading
            # Our pointer carries its own promotion time: the same bytes can only be our write.
            if stored != body:
                raise RegistryError(
                    f"the champion pointer changed while promoting {version}; "
                    "another promotion ran at the same time: check `fer models list` and retry"
                ) from error
            _applied_before(CHAMPION_KEY)
        logger.info("champion is now %s (was %s)", version, pointer.previous)
        return pointer

    def verify_version(self, version: str) -> dict[str, str]:
        """Download every file of a version afresh and check its size and sha256.

        Args:
            version: version id.

        Returns:
            File name -> ``"ok"`` or what is wrong with it.

        Raises:
            RegistryError: if the version has no manifest or the store cannot be reached.
        """
        results: dict[str, str] = {}
        files = self.read_manifest(version)["files"]
        # A scratch folder, not the download cache: the store's copy is what is checked.
        with tempfile.TemporaryDirectory(prefix="fer-verify-") as scratch:
            for name, entry in files.items():
                try:
                    path = self.download_file(version, name, Path(scratch), entry["sha256"])
                except StoreUnavailable:
                    raise
                except RegistryError as error:
                    results[name] = str(error)
                    continue
                size = path.stat().st_size
                expected = entry["bytes"]
                results[name] = "ok" if size == expected else f"{size} bytes, expected {expected}"
        return results

    def prune(
        self, keep: int, dry_run: bool = False, incomplete_after_seconds: float = 24 * 3600
    ) -> Pruned:
        """Delete all but the ``keep`` newest versions; never the champion or its previous.

        Each version's manifest is deleted first, so it stops being a complete version
        before any of its files go. Prefixes left by publishes that never completed (no
        manifest) are deleted too once their newest file is ``incomplete_after_seconds``
        old, so a publish still in progress is not touched.

        Args:
            keep: how many of the newest complete versions to keep (besides the protected).
            dry_run: only report what would be deleted.
            incomplete_after_seconds: age after which an incomplete prefix is abandoned.

        Returns:
            The deleted (or, with ``dry_run``, deletable) complete versions and incomplete
            prefixes, oldest first.

        Raises:
            RegistryError: if ``keep`` is negative or the store fails.
        """
        if keep < 0:
            raise RegistryError(f"--keep must be 0 or more, not {keep}")
        newest = self._newest_file_times()
        versions = self.list_versions()
        pointer = self.champion()
        protected = set(versions[len(versions) - keep :] if keep else ())
        if pointer is not None:
            protected |= {pointer.version, *pointer.history[:1]}
        cutoff = datetime.now(UTC).timestamp() - incomplete_after_seconds
        abandoned = sorted(
            version
            for version, modified in newest.items()
            if version not in versions and modified.timestamp() <= cutoff
        )
        doomed = [version for version in versions if version not in protected]
        if dry_run:
            return Pruned(doomed, abandoned)
        deleted = []
        for version in doomed:
            # Re-read: a promotion may have landed since the list was made.
            pointer = self.champion()
            if pointer is not None and version in (pointer.version, pointer.previous):
                continue
            self._delete_version(version)
            deleted.append(version)
        for version in abandoned:
            self._delete_version(version)
        return Pruned(deleted, abandoned)

    def _newest_file_times(self) -> dict[str, datetime]:
        """Each version prefix (complete or not) with the time of its newest file."""
        newest: dict[str, datetime] = {}
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=f"{MODELS_PREFIX}/"):
                for item in page.get("Contents", []):
                    parts = item["Key"].split("/")
                    if len(parts) >= 3:
                        seen = newest.get(parts[1])
                        if seen is None or item["LastModified"] > seen:
                            newest[parts[1]] = item["LastModified"]
        except (ClientError, BotoCoreError) as error:
            raise self._failure(error, self.uri(MODELS_PREFIX)) from error
        return newest

    def _delete_version(self, version: str) -> None:
        prefix = f"{MODELS_PREFIX}/{version}/"
        try:
            self.client.delete_object(Bucket=self.bucket, Key=prefix + MANIFEST_FILE)
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                for item in page.get("Contents", []):
                    self.client.delete_object(Bucket=self.bucket, Key=item["Key"])
        except (ClientError, BotoCoreError) as error:
            raise self._failure(error, self.uri(prefix)) from error
        logger.info("deleted model version %s", version)

    def download_model(self, version: str, dest_dir: Path, expected_sha256: str) -> Path:
        """Download a version's model file and verify its hash before anyone loads it.

        Args:
            version: version id.
            dest_dir: local folder; the file lands at ``<dest_dir>/<version>/model.keras``.
            expected_sha256: hash from the champion pointer or manifest.

        Returns:
            Path of the verified file (reused when already present and intact).

        Raises:
            RegistryError: if the download fails or the hash does not match.
        """
        return self.download_file(version, MODEL_FILE, dest_dir, expected_sha256)

    def download_served(
        self, version: str, dest_dir: Path, expected_sha256: str | None = None
    ) -> Path:
        """Download what serves a version: its model and, when it has one, its TFLite export.

        Both land in ``<dest_dir>/<version>/`` and are sha256-verified, the export against
        the manifest; :meth:`model.inference.predictor.Predictor.from_file` and
        :func:`model.evaluation.metrics.load_scored` pick the export up from beside the model.

        Args:
            version: version id.
            dest_dir: local cache folder.
            expected_sha256: the model's hash from the champion pointer (default: the
                manifest's).

        Returns:
            Path of the verified ``model.keras``.

        Raises:
            RegistryError: if a download fails or a hash does not match.
        """
        from model.contract import TFLITE_FILE

        files = self.read_manifest(version)["files"]
        digest = expected_sha256 or files[MODEL_FILE]["sha256"]
        path = self.download_file(version, MODEL_FILE, dest_dir, digest)
        if TFLITE_FILE in files:
            self.download_file(version, TFLITE_FILE, dest_dir, files[TFLITE_FILE]["sha256"])
        return path

    def download_file(self, version: str, name: str, dest_dir: Path, expected_sha256: str) -> Path:
        """Download one file of a version and verify its hash before anyone uses it.

        The cache is keyed by content: the verified file is kept as
        ``<dest_dir>/blobs/<sha256>`` and hard-linked (copied where links are impossible) to
        ``<dest_dir>/<version>/<name>``, so versions sharing a file download it once. A cached
        file is re-hashed before it is reused.

        Args:
            version: version id.
            name: file name inside the version (``model.keras``, ``serving.tflite``, ...).
            dest_dir: local cache folder.
            expected_sha256: hash from the champion pointer or manifest.

        Returns:
            ``<dest_dir>/<version>/<name>``, verified.

        Raises:
            RegistryError: if the download fails or the hash does not match.
        """
        target = dest_dir / version / name
        if target.exists() and sha256_file(target) == expected_sha256:
            return target
        blob = dest_dir / "blobs" / expected_sha256
        if not (blob.exists() and sha256_file(blob) == expected_sha256):
            self._fetch_verified(f"{MODELS_PREFIX}/{version}/{name}", blob, expected_sha256)
        target.parent.mkdir(parents=True, exist_ok=True)
        staged = target.with_name(f".{name}.{os.getpid()}.link")
        staged.unlink(missing_ok=True)
        try:
            os.link(blob, staged)
        except OSError:  # another file system, or no hard links there
            shutil.copyfile(blob, staged)
        os.replace(staged, target)
        return target

    def _fetch_verified(self, key: str, dest: Path, expected_sha256: str) -> None:
        """Download ``key`` to ``dest`` through a ``.part`` file, renamed only if it verifies."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=dest.parent, suffix=".part", delete=False) as tmp:
            tmp_path = Path(tmp.name)
        try:
            self.client.download_file(self.bucket, key, str(tmp_path))
            actual = sha256_file(tmp_path)
            if actual != expected_sha256:
                raise IntegrityError(
                    f"{self.uri(key)} has sha256 {actual[:12]}…, expected {expected_sha256[:12]}…: "
                    "the stored file is corrupt or was replaced; it will not be used"
                )
            os.replace(tmp_path, dest)
        except (ClientError, BotoCoreError, RetriesExceededError) as error:
            raise self._failure(error, self.uri(key)) from error
        finally:
            tmp_path.unlink(missing_ok=True)
