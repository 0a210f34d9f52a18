"""The egress door's bounds on connections that have shown no credential yet (door_admission.py): per source, in
all (a quieter source takes the busiest one's oldest place), and on all the door holds."""

from __future__ import annotations

from responses_bridge.sandbox.agent_sandbox.door_admission import Admission, DoorLimits


class Closed(list[int]):
    def closer(self, ticket_no: int):  # type: ignore[no-untyped-def]
        return lambda: self.append(ticket_no)


def test_a_source_past_its_share_is_refused_and_the_others_are_not() -> None:
    admission, closed = Admission(DoorLimits(per_source=2, pending=10, connections=100)), Closed()
    assert admission.arrive("a", closed.closer(1)) is not None and admission.arrive("a", closed.closer(2)) is not None
    assert admission.arrive("a", closed.closer(3)) is None
    assert admission.arrive("b", closed.closer(4)) is not None
    assert (admission.pending, admission.open, admission.refused, closed) == (3, 3, 1, [])


def test_past_the_pending_bound_a_quieter_source_takes_the_busiest_one_s_oldest_place() -> None:
    admission, closed = Admission(DoorLimits(per_source=4, pending=4, connections=100)), Closed()
    tickets = [admission.arrive("flood", closed.closer(n)) for n in range(4)]
    assert admission.arrive("flood", closed.closer(9)) is None  # the busiest source itself: refused
    pod = admission.arrive("pod", closed.closer(10))
    assert pod is not None and closed == [0] and admission.pending == 4 and admission.open == 4
    admission.leave("flood", tickets[0])  # the evicted connection's own end counts nothing twice
    assert admission.open == 4 and admission.pending == 4
    admission.shown("pod", pod)  # showed a credential: no longer pending, still open
    assert admission.pending == 3 and admission.open == 4
    admission.leave("pod", pod)
    assert admission.open == 3


def test_the_door_s_cap_counts_relaying_connections_too() -> None:
    admission, closed = Admission(DoorLimits(per_source=8, pending=8, connections=2)), Closed()
    first, second = admission.arrive("a", closed.closer(1)), admission.arrive("b", closed.closer(2))
    assert first is not None and second is not None
    admission.shown("a", first)
    admission.shown("b", second)
    assert admission.arrive("c", closed.closer(3)) is None  # both relaying: nothing pending to give way
    admission.leave("a", first)
    assert admission.arrive("c", closed.closer(3)) is not None and closed == []


def test_the_default_cap_is_an_eighth_of_the_descriptor_limit_within_its_floor_and_ceiling() -> None:
    import resource

    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    expected = 1024 if soft == resource.RLIM_INFINITY else max(16, min(1024, soft // 8))
    assert DoorLimits().cap == expected and DoorLimits(connections=5).cap == 5
