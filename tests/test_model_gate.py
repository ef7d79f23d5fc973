"""The model gate: a question's encode waits for at most the one batch already running."""

from __future__ import annotations

import threading
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from embeddings.encoder import ModelGate


@settings(max_examples=60, deadline=None)
@given(urgent=st.lists(st.booleans(), min_size=1, max_size=12))
def test_waiters_are_served_urgent_first_each_class_in_order(urgent: list[bool]):
    gate = ModelGate()
    served: list[int] = []
    release = threading.Event()
    holder_in = threading.Event()

    def hold() -> None:
        with gate.turn():
            holder_in.set()
            release.wait(5)

    def wait_turn(i: int) -> None:
        with gate.turn(urgent=urgent[i]):
            served.append(i)

    holder = threading.Thread(target=hold)
    holder.start()
    holder_in.wait(5)
    waiters = []
    for i in range(len(urgent)):  # queue them one by one, so arrival order is known
        t = threading.Thread(target=wait_turn, args=(i,))
        t.start()
        waiters.append(t)
        deadline = time.monotonic() + 5
        while len(gate._queues[0]) + len(gate._queues[1]) < i + 1 and time.monotonic() < deadline:
            time.sleep(0.0005)
    release.set()
    for t in [holder, *waiters]:
        t.join(5)
    expected = [i for i, u in enumerate(urgent) if u] + [i for i, u in enumerate(urgent) if not u]
    assert served == expected


def test_a_question_waits_for_one_batch_not_the_whole_ingest():
    gate = ModelGate()
    batch = 0.02
    started = threading.Event()

    def ingest() -> None:  # forty batches back to back, as an ingest encodes
        for _ in range(40):
            with gate.turn():
                started.set()
                time.sleep(batch)

    t = threading.Thread(target=ingest)
    t.start()
    started.wait(5)
    time.sleep(3 * batch)
    begin = time.monotonic()
    with gate.turn(urgent=True):
        waited = time.monotonic() - begin
    t.join(10)
    # A plain lock let the ingest thread take it again batch after batch: the question waited
    # for most of the 0.8 s ingest. Now at most the batch in progress (plus scheduling slack).
    assert waited < 4 * batch


def test_questions_in_a_row_go_first_but_never_stop_a_bulk_batch():
    gate = ModelGate(grace=0.05, patience=0.3)
    stop = threading.Event()
    urgent_turns = 0

    def conversation() -> None:  # question after question, 10 ms apart (less than the grace)
        nonlocal urgent_turns
        while not stop.is_set():
            with gate.turn(urgent=True):
                urgent_turns += 1
            time.sleep(0.01)

    t = threading.Thread(target=conversation)
    t.start()
    time.sleep(0.05)
    begin = time.monotonic()
    with gate.turn():
        waited = time.monotonic() - begin
        turns_before = urgent_turns
    stop.set()
    t.join(5)
    assert turns_before >= 5  # questions kept going first...
    assert 0.25 <= waited < 0.8  # ...until the bulk batch had waited its patience


def test_a_saturating_stream_of_questions_still_lets_each_batch_through():
    # Two threads asking back to back keep a question always waiting: a batch still gets in.
    gate = ModelGate(grace=0.05, patience=0.2)
    stop = threading.Event()

    def asker() -> None:
        while not stop.is_set():
            with gate.turn(urgent=True):
                time.sleep(0.005)

    askers = [threading.Thread(target=asker) for _ in range(2)]
    for t in askers:
        t.start()
    time.sleep(0.05)
    waits = []
    for _ in range(3):
        begin = time.monotonic()
        with gate.turn():
            waits.append(time.monotonic() - begin)
    stop.set()
    for t in askers:
        t.join(5)
    assert max(waits) < 0.6  # patience plus the question in progress, not forever
