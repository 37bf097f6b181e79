"""The registry against a real SeaweedFS: immutable versions, CAS promotion, verified downloads."""

from __future__ import annotations

import json
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from model.errors import RegistryError, StoreUnavailable
from model.files import sha256_file
from model.registry.store import CHAMPION_KEY, ChampionPointer, ModelRegistry
from model.settings import Settings

pytestmark = pytest.mark.integration


@pytest.fixture
def registry(services: Settings) -> ModelRegistry:
    registry = ModelRegistry(ModelRegistry.from_settings(services).client, "fer-registry-test")
    registry.ensure_bucket()
    return registry


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    path = tmp_path / "model.keras"
    path.write_bytes(b"fake model bytes" * 1000)
    return path


def test_publish_then_promote_moves_the_pointer(registry: ModelRegistry, model_file: Path) -> None:
    first = registry.publish_version(model_file, {"metrics": {"accuracy": 0.5}})
    second = registry.publish_version(model_file, {"metrics": {"accuracy": 0.6}})
    assert {first, second} <= set(registry.list_versions())
    manifest = registry.read_manifest(first)
    assert manifest["version"] == first
    assert manifest["files"]["model.keras"]["sha256"] == sha256_file(model_file)
    registry.promote(first)
    pointer = registry.promote(second)
    assert registry.champion() == pointer
    assert (pointer.version, pointer.previous) == (second, first)


def test_stale_promotion_loses_the_race(
    registry: ModelRegistry, model_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = registry.publish_version(model_file, {})
    second = registry.publish_version(model_file, {})
    third = registry.publish_version(model_file, {})
    registry.promote(first)
    stale = registry.get_json(CHAMPION_KEY)
    registry.promote(second)
    # A promoter that read the pointer before the last promotion must not overwrite it.
    monkeypatch.setattr(
        registry,
        "get_json",
        lambda key: stale if key == CHAMPION_KEY else ModelRegistry.get_json(registry, key),
    )
    with pytest.raises(RegistryError, match="changed while promoting"):
        registry.promote(third)
    monkeypatch.undo()
    assert registry.champion().version == second


@pytest.mark.parametrize("pointer_exists", [True, False], ids=["replace", "first-promotion"])
def test_concurrent_promotions_exactly_one_wins(
    services: Settings, model_file: Path, pointer_exists: bool
) -> None:
    client = ModelRegistry.from_settings(services).client
    setup = ModelRegistry(client, f"fer-race-{uuid.uuid4().hex[:8]}")
    setup.ensure_bucket()
    versions = [setup.publish_version(model_file, {}) for _ in range(5)]
    if pointer_exists:
        setup.promote(versions[0])
    contenders = versions[1:]
    # Every worker reads the pointer before any of them writes: the tightest race there is.
    everyone_read = threading.Barrier(len(contenders))

    class Racing(ModelRegistry):
        def get_json(self, key: str):  # type: ignore[no-untyped-def]
            found = super().get_json(key)
            if key == CHAMPION_KEY:
                everyone_read.wait(timeout=30)
            return found

    def promote(version: str) -> ChampionPointer | RegistryError:
        worker = Racing(ModelRegistry.from_settings(services).client, setup.bucket)
        try:
            return worker.promote(version)
        except RegistryError as error:
            return error

    with ThreadPoolExecutor(len(contenders)) as pool:
        results = list(pool.map(promote, contenders))
    winners = [r for r in results if isinstance(r, ChampionPointer)]
    losers = [r for r in results if isinstance(r, RegistryError)]
    assert len(winners) == 1, results
    assert len(losers) == len(contenders) - 1
    assert all("another promotion ran at the same time" in str(error) for error in losers)
    assert setup.champion() == winners[0]
    assert winners[0].previous == (versions[0] if pointer_exists else None)


def test_incomplete_version_cannot_be_promoted(registry: ModelRegistry) -> None:
    registry.client.put_object(
        Bucket=registry.bucket, Key="models/half-written/model.keras", Body=b"x"
    )
    assert "half-written" not in registry.list_versions()
    with pytest.raises(RegistryError, match="never completed"):
        registry.promote("half-written")


def test_manifest_is_create_once(registry: ModelRegistry, model_file: Path) -> None:
    version = registry.publish_version(model_file, {})
    with pytest.raises(Exception) as error:
        registry.client.put_object(
            Bucket=registry.bucket,
            Key=f"models/{version}/manifest.json",
            Body=b"{}",
            IfNoneMatch="*",
        )
    assert "PreconditionFailed" in str(error.value)
    assert json.loads(
        registry.client.get_object(Bucket=registry.bucket, Key=f"models/{version}/manifest.json")[
            "Body"
        ].read()
    )["version"]


def test_download_verifies_the_hash(
    registry: ModelRegistry, model_file: Path, tmp_path: Path
) -> None:
    version = registry.publish_version(model_file, {})
    digest = sha256_file(model_file)
    path = registry.download_model(version, tmp_path / "cache", digest)
    assert path.read_bytes() == model_file.read_bytes()
    with pytest.raises(RegistryError, match="will not be used"):
        registry.download_model(version, tmp_path / "other", "0" * 64)
    # Nothing unverified is left behind, not even a partial download.
    assert [p for p in (tmp_path / "other").rglob("*") if p.is_file()] == []


def test_download_cache_is_keyed_by_content(
    registry: ModelRegistry, model_file: Path, tmp_path: Path
) -> None:
    digest = sha256_file(model_file)
    first = registry.publish_version(model_file, {})
    second = registry.publish_version(model_file, {})  # the same model, published again
    gets: list[str] = []
    registry.client.meta.events.register(
        "after-call.s3.GetObject", lambda **kwargs: gets.append(kwargs["model"].name)
    )
    cache = tmp_path / "cache"
    one = registry.download_model(first, cache, digest)
    two = registry.download_model(second, cache, digest)
    assert len(gets) == 1, "the second version's identical file was downloaded again"
    assert one.read_bytes() == two.read_bytes() == model_file.read_bytes()
    assert one.stat().st_ino == two.stat().st_ino == (cache / "blobs" / digest).stat().st_ino
    # A cached copy that no longer matches its hash is fetched again, not used.
    (cache / "blobs" / digest).unlink()
    one.unlink()
    one.parent.mkdir(exist_ok=True)
    one.write_bytes(b"changed on disk")
    assert registry.download_model(first, cache, digest).read_bytes() == model_file.read_bytes()
    assert len(gets) == 2


def test_unreachable_store_gives_a_clear_error_that_tasks_retry(tmp_path: Path) -> None:
    from infra.services import free_port
    from tasks.common import retry_unless_platform_error

    settings = Settings(home=tmp_path, s3_port=free_port(), s3_attempts=2)
    registry = ModelRegistry.from_settings(settings)
    with pytest.raises(StoreUnavailable, match="fer services up") as outage:
        registry.champion()

    class Failed:  # the part of a Prefect state the retry condition reads
        def __init__(self, error: Exception) -> None:
            self.error = error

        def result(self) -> None:
            raise self.error

    assert retry_unless_platform_error(None, None, Failed(outage.value))
    assert not retry_unless_platform_error(None, None, Failed(RegistryError("no such version")))
    assert retry_unless_platform_error(None, None, Failed(OSError("disk hiccup")))


def test_promoting_the_champion_again_keeps_its_previous(
    registry: ModelRegistry, model_file: Path
) -> None:
    first = registry.publish_version(model_file, {})
    second = registry.publish_version(model_file, {})
    registry.promote(first)
    pointer = registry.promote(second)
    # A retried promotion whose first write landed must not make the champion its own previous.
    assert registry.promote(second) == pointer
    assert registry.champion().previous == first


def test_publishing_never_overwrites_a_file_of_an_existing_version(
    registry: ModelRegistry, model_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import model.registry.store as registry_module

    version = registry.publish_version(model_file, {"metrics": {"accuracy": 0.5}})
    other = tmp_path / "other" / "model.keras"
    other.parent.mkdir()
    other.write_bytes(b"a different model")
    # Force an id collision: every file write is conditional, so nothing is replaced.
    monkeypatch.setattr(registry_module, "new_version_id", lambda digest: version)
    with pytest.raises(RegistryError, match="versions are never overwritten"):
        registry.publish_version(other, {"metrics": {"accuracy": 0.9}})
    stored = registry.download_model(version, tmp_path / "cache", sha256_file(model_file))
    assert stored.read_bytes() == model_file.read_bytes()
    assert registry.read_manifest(version)["metrics"]["accuracy"] == 0.5


def _lose_first_reply(registry: ModelRegistry, *names: str) -> list[str]:
    """The first stored ``PutObject`` of each key ending in one of ``names`` loses its reply.

    The request really reaches the store; then a read timeout is raised in place of its reply,
    so boto3 resends it as it would after a network fault, and the resend meets its own write.

    Returns:
        The keys whose reply was lost, filled in as it happens.
    """
    from botocore.exceptions import ReadTimeoutError
    from botocore.httpsession import URLLib3Session

    session = URLLib3Session()
    lost: list[str] = []

    def send_then_lose_the_reply(request: Any, **_: Any) -> Any:
        path = request.url.split("?")[0]
        if not path.endswith(names) or path in lost:
            return None  # botocore sends it as usual
        response = session.send(request)
        if response.status_code != 200:
            return response  # not stored: this reply arrives
        lost.append(path)
        raise ReadTimeoutError(endpoint_url=request.url)

    registry.client.meta.events.register("before-send.s3.PutObject", send_then_lose_the_reply)
    return lost


def test_a_write_stored_whose_reply_was_lost_is_no_failure(
    registry: ModelRegistry, model_file: Path, tmp_path: Path
) -> None:
    registry.promote(registry.publish_version(model_file, {}))
    lost = _lose_first_reply(registry, "/model.keras", "/manifest.json", f"/{CHAMPION_KEY}")
    version = registry.publish_version(model_file, {"metrics": {"accuracy": 0.7}})
    pointer = registry.promote(version)
    # All three conditional writes were resent after they were stored, and got 412 for it.
    assert len(lost) == 3, lost
    assert registry.champion() == pointer and pointer.version == version
    assert registry.verify_version(version)
    assert registry.read_manifest(version)["metrics"] == {"accuracy": 0.7}


def test_a_lost_reply_does_not_hide_a_real_race(registry: ModelRegistry, model_file: Path) -> None:
    first = registry.publish_version(model_file, {})
    second = registry.publish_version(model_file, {})
    registry.promote(first)
    stale = registry.get_json(CHAMPION_KEY)
    registry.promote(second)
    # A promoter that read the pointer before `second` was promoted, with its own reply lost.
    lost = _lose_first_reply(registry, f"/{CHAMPION_KEY}")
    with pytest.raises(RegistryError, match="changed while promoting"):
        registry._swap(first, (), stale)
    assert lost == []  # its condition failed on the first attempt: nothing was stored
    assert registry.champion().version == second
