"""Accounting per MIG profile in a real slurmdbd with MariaDB (opt-in
harness/accounting.py): the generated AccountingStorageTRES makes each
profile a trackable resource that sacct reports, and the generated
TRESBillingWeights bill the compute slices a job holds (plus Slurm's one
per CPU), so a 7g.80gb job costs more than a 1g.10gb one."""
import re
import time

import pytest

from harness.devcluster import DevCluster

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def accounted(slurm):
    with DevCluster("2xH100-80GB", wait_for_room=3, slurm=slurm, accounting=True) as c:
        yield c


def sacct_tres(cluster, job, timeout=60):
    """The job's AllocTRES as slurmdbd recorded it: {tres: count}."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = cluster.run("sacct", "-n", "-X", "-P", "-j", job, "-o", "AllocTRES,State").stdout.strip()
        if out and "COMPLETED" in out:
            tres = out.split("|")[0]
            return dict(item.split("=", 1) for item in tres.split(",") if item)
        time.sleep(0.5)
    raise AssertionError(f"no completed record of job {job} in slurmdbd: {out!r}")


def run(cluster, gres):
    job = cluster.sbatch(f"--gres={gres}", script="true")
    assert cluster.wait_job(job) == "COMPLETED"
    return sacct_tres(cluster, job)


def test_sacct_reports_the_profile_and_bills_its_slices(accounted):
    tres = run(accounted, "mig:3g.40gb:1")
    assert tres["gres/mig:3g.40gb"] == "1", tres
    assert tres["billing"] == "4", tres          # 3 compute slices + 1 CPU
    assert "gres/mig:1g.10gb" not in tres


def test_billing_differs_by_profile(accounted):
    small, large, mixed = (run(accounted, g) for g in ("mig:1g.10gb:1", "mig:7g.80gb:1",
                                                       "mig:2g.20gb:1,mig:1g.20gb:2"))
    assert (small["billing"], large["billing"], mixed["billing"]) == ("2", "8", "5")
    assert small["gres/mig:1g.10gb"] == "1" and large["gres/mig:7g.80gb"] == "1"
    assert mixed["gres/mig:2g.20gb"] == "1" and mixed["gres/mig:1g.20gb"] == "2"


def test_a_whole_gpu_bills_all_its_slices(accounted):
    tres = run(accounted, "gpu:1")
    assert tres["gres/gpu:h100_sxm5_80gb"] == "1" and tres["billing"] == "8", tres


def test_the_running_job_shows_its_billing(accounted):
    job = accounted.sbatch("--gres=mig:4g.40gb:1", script="sleep 5")
    accounted._wait(lambda: accounted.job_state(job) == "RUNNING", 60, f"job {job} running")
    shown = accounted.run("scontrol", "show", "job", job).stdout
    assert re.search(r"TRES=\S*billing=5\b", shown) and "gres/mig:4g.40gb=1" in shown, shown
    assert accounted.wait_job(job) == "COMPLETED"
