"""Request parsing and job-id validation, including fuzzing for crashes."""
import pytest
from hypothesis import given, strategies as st

from slurm_mig.errors import BadInput
from slurm_mig.core.syntax import MigRequest, check_job_id


@pytest.mark.parametrize("spec,expected", [
    ("mig:3g.40gb:1", {"3g.40gb": 1}),
    ("3g.40gb", {"3g.40gb": 1}),
    ("mig:3g.40gb:2,mig:1g.10gb:1", {"3g.40gb": 2, "1g.10gb": 1}),
    ("gres:mig:3g.40gb:1,gres:shard:4", {"3g.40gb": 1}),
    ("gres/mig:1g.10gb:3", {"1g.10gb": 3}),
    ("MIG:1G.10GB:1,mig:1g.10gb:1", {"1g.10gb": 2}),
    ("mig:3g.39gb:1", {"3g.39gb": 1}),
])
def test_parse(spec, expected):
    assert MigRequest.parse(spec) == expected


@pytest.mark.parametrize("spec,needle", [
    ("", "empty"), ("mig:4g.44gb:1", "unknown MIG profile"), ("mig:1g.10gb:0", "bad count"),
    ("mig:1g.10gb:-1", "bad count"), ("mig:1g.10gb:1:2", "malformed"), ("shard:4", "no MIG profile"),
    ("mig:1g.10gb:40,mig:2g.20gb:40", "at most 64"),
])
def test_parse_rejects(spec, needle):
    with pytest.raises(BadInput, match=needle):
        MigRequest.parse(spec)


def test_format_roundtrip():
    request = MigRequest({"3g.40gb": 2, "1g.10gb": 1})
    assert str(request) == "mig:1g.10gb:1,mig:3g.40gb:2" and MigRequest.parse(str(request)) == request


@pytest.mark.parametrize("counts,needle", [
    ({}, "empty"), ({"4g.44gb": 1}, "unknown MIG profile"), ({"1g.10gb": 0}, "bad count"),
    ({"1g.10gb": True}, "bad count"), ({"1g.10gb": "1"}, "bad count"), ({"1g.10gb": 65}, "bad count"),
])
def test_a_request_built_from_counts_is_checked_as_a_parsed_one(counts, needle):
    with pytest.raises(BadInput, match=needle):
        MigRequest(counts)


@given(st.text(max_size=80))
def test_parse_never_crashes(spec):
    try:
        out = MigRequest.parse(spec)
    except BadInput:
        return
    assert out and all(1 <= n <= 64 for n in out.values())


@pytest.mark.parametrize("job", ["1", "4294967295"])
def test_job_ids(job):
    assert check_job_id(job) == job


@pytest.mark.parametrize("job", ["", "abc", "../1", "1/2", "1 2", "-1", "12345678901", None, "1\n"])
def test_bad_job_ids(job):
    with pytest.raises(BadInput):
        check_job_id(job)


@given(st.text(max_size=20))
def test_job_id_fuzz(job):
    try:
        assert check_job_id(job).isdigit()
    except BadInput:
        pass
