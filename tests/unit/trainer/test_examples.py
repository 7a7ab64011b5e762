"""The trainer's example store (`services.trainer.examples`): offsets, encoding, refusals."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from services.trainer.service import Trainer
from shared.features import encode_features
from tests.fixtures import credit_examples, credit_schema
from tests.unit.trainer.helpers import FakePublisher, FakeRegistry, settings


def test_store_tracks_offset_ranges(tmp_path: Path) -> None:
    trainer = Trainer(settings(tmp_path), credit_schema(), FakePublisher(), FakeRegistry())
    data = credit_examples(6)
    for i, example in enumerate(data):
        trainer.examples.add(example, partition=i % 2, offset=100 + i)
    assert trainer.examples.offset_ranges(data) == {"0": [100, 104], "1": [101, 105]}


def test_the_store_encodes_as_the_batch_does_and_hands_rows_on(tmp_path: Path) -> None:
    schema = credit_schema()
    trainer = Trainer(settings(tmp_path, trainer_max_examples=100), schema, FakePublisher(), FakeRegistry())
    data = credit_examples(250)
    rng = random.Random(3)
    shuffled = rng.sample(data, len(data))  # arrival order is not event-time order
    for i in (-1, -2, -3):  # ties among the kept: the record id decides
        shuffled[i] = shuffled[i].model_copy(update={"event_time": shuffled[-10].event_time})
    for example in shuffled:
        trainer.examples.add(example)
    # The 100 newest arrivals are kept (rows handed on twice), in event-time order.
    kept = sorted(shuffled[-100:], key=lambda e: (e.event_time, e.record_id))
    stored = trainer.examples.training_set()
    batch_x = encode_features(schema, [e.features for e in kept])  # the batch encoder serving uses
    assert stored.examples == kept
    assert np.array_equal(stored.x, batch_x, equal_nan=True)
    assert stored.y.tolist() == [schema.label.classes.index(e.label) for e in kept]
    assert np.isnan(stored.x).any()  # missing values travel too
    since = kept[50].event_time
    later = trainer.examples.training_set(since=since)
    assert later.examples == [e for e in kept if e.event_time >= since]
    assert np.array_equal(later.x, batch_x[-len(later) :], equal_nan=True)
    assert trainer.examples.snapshot(since=since) == later.examples


def test_the_store_refuses_a_label_outside_the_classes(tmp_path: Path) -> None:
    trainer = Trainer(settings(tmp_path), credit_schema(), FakePublisher(), FakeRegistry())
    good, bad = credit_examples(2)
    assert trainer.examples.add(good) and not trainer.examples.add(bad.model_copy(update={"label": "maybe"}))
    assert len(trainer.examples) == 1 and trainer.examples.refused == 1
