"""The record lifecycle (core/lifecycle.py): the transition table against an
independent statement of what the hooks may do to a record, and the states'
names on disk."""
import pytest
from hypothesis import given, strategies as st

from slurm_mig.core.lifecycle import LIVE, TRANSITIONS, IllegalTransition, Record, State

# The names the previous release (schema 1.1, and 0.1.0 before it) reads: every
# state this one writes must be among them, or a downgrade would quarantine it.
PREVIOUS_RELEASE_STATES = {"planned", "created", "bound", "releasing", "released", "failed"}


def may_move(a: str, b: str) -> bool:
    """The oracle, in the hooks' terms: closed records never change; any open
    one may close or start releasing (a release retried stays releasing);
    instances are created only after the intent is written; a job is bound
    from its intent (whole GPUs) or its created instances; intent and
    refusals are new records, never a step of an existing one."""
    if a in ("released", "failed"):
        return False
    if b in ("released", "releasing"):
        return True
    return {"created": a == "planned", "bound": a in ("planned", "created")}.get(b, False)


@given(st.sampled_from(list(State)), st.lists(st.sampled_from(list(State)), max_size=8))
def test_every_move_is_allowed_exactly_when_the_oracle_allows_it(start, moves):
    rec = Record(job="7", state=start)
    for to in moves:
        before = rec.state
        if may_move(before.value, to.value):
            assert rec.move(to, reason=f"to {to.value}") is rec and rec.state is to
            assert rec.reason == f"to {to.value}"
        else:
            with pytest.raises(IllegalTransition, match=f"cannot go from {before.name} to {to.name}"):
                rec.move(to)
            assert rec.state is before
        assert rec.live == (rec.state.value not in ("released", "failed"))


def test_the_table_is_complete_and_live_means_it_can_still_move():
    assert set(TRANSITIONS) == set(State)
    assert LIVE == {State.PREPARE_STARTED, State.CREATED, State.PREPARE_COMPLETED, State.RELEASING}


def test_state_changes_only_through_the_table():
    rec = Record(job="7", state=State.PREPARE_COMPLETED)
    with pytest.raises(AttributeError):
        rec.state = State.PREPARE_STARTED


@given(st.sampled_from(list(State)), st.dictionaries(st.sampled_from(["future", "x_y"]), st.integers()))
def test_a_record_keeps_its_state_and_unknown_fields_through_its_file_form(state, extra):
    raw = {**Record(job="3", state=state, request={"1g.10gb": 2}).to_dict(), **extra}
    assert raw["state"] in PREVIOUS_RELEASE_STATES
    back = Record.from_dict(raw)
    assert back.state is state and back.extra == extra and back.to_dict() == raw


def test_an_unknown_state_is_not_a_record():
    with pytest.raises(ValueError):
        Record.from_dict({"job": "3", "state": "prepared"})
