"""The store goes down in the middle of a publish: nothing partial is promoted, and the next
publish succeeds once it is back. A SeaweedFS of its own, so stopping it harms no other test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.services import (
    SEAWEEDFS,
    ensure_store_bucket,
    free_port,
    read_state,
    start_seaweedfs,
    stop_service,
)
from model.errors import RegistryError, StoreUnavailable
from model.registry.store import ModelRegistry
from model.settings import Settings

pytestmark = pytest.mark.integration


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Settings]:
    # Two attempts per call: the outage is certain here, waiting for it to pass is not tested.
    settings = Settings(
        home=tmp_path / "home", s3_port=free_port(), s3_bucket="fer-faults", s3_attempts=2
    )
    start_seaweedfs(settings, timeout=120)
    ensure_store_bucket(settings, timeout=60)
    try:
        yield settings
    finally:
        state = read_state(settings, SEAWEEDFS)
        if state is not None:
            stop_service(state, grace=10)


def _model(tmp_path: Path, text: str) -> tuple[Path, Path]:
    path = tmp_path / text / "model.keras"
    path.parent.mkdir()
    path.write_bytes(text.encode() * 10_000)
    card = path.with_name("model_card.md")
    card.write_text(f"card of {text}")
    return path, card


def test_store_down_mid_publish_promotes_nothing_partial(store: Settings, tmp_path: Path) -> None:
    registry = ModelRegistry.from_settings(store)
    good, good_card = _model(tmp_path, "good")
    champion = registry.publish_version(good, {"metrics": {"accuracy": 0.6}}, [good_card])
    registry.promote(champion)

    # The store dies right after the first object of the next version is written.
    stopped: list[bool] = []

    def stop_the_store(**_: object) -> None:
        if not stopped:
            stopped.append(True)
            stop_service(read_state(store, SEAWEEDFS), grace=10)

    registry.client.meta.events.register("after-call.s3.PutObject", stop_the_store)
    new, new_card = _model(tmp_path, "new")
    with pytest.raises(StoreUnavailable, match="fer services up"):
        registry.publish_version(new, {"metrics": {"accuracy": 0.7}}, [new_card])
    assert stopped
    with pytest.raises(StoreUnavailable):
        registry.champion()

    start_seaweedfs(store, timeout=120)  # same data folder: what was written survives
    ensure_store_bucket(store, timeout=60)
    assert registry.champion().version == champion
    assert registry.list_versions() == [champion]
    partial = {
        item["Key"].split("/")[1]
        for item in registry.client.list_objects_v2(Bucket=store.s3_bucket, Prefix="models/")[
            "Contents"
        ]
    } - {champion, "champion.json"}
    assert len(partial) == 1, "the card of the interrupted version was written"
    with pytest.raises(RegistryError, match="never completed"):
        registry.promote(partial.pop())

    # The next run publishes and promotes normally.
    retried = registry.publish_version(new, {"metrics": {"accuracy": 0.7}}, [new_card])
    assert registry.promote(retried).previous == champion
    assert registry.list_versions() == [champion, retried]
