"""The job area of every tab: the newest apply job the person started
(services.jobs.latest_apply, one statement written once per process)."""

import pytest

from mailadmin.models import Job, JobKind, JobState
from mailadmin.services.jobs import latest_apply

pytestmark = pytest.mark.django_db


def test_latest_apply_is_the_persons_newest_apply_and_nothing_else(alice, bob):
    assert latest_apply(alice) is None
    older = Job.objects.create(kind=JobKind.APPLY, requested_by=alice, state=JobState.DONE, changed_files=["/a"])
    newest = Job.objects.create(kind=JobKind.APPLY, requested_by=alice, result={"x": 1})
    Job.objects.create(kind=JobKind.DNS_CHECK, requested_by=alice)  # a check started since is not it
    Job.objects.create(kind=JobKind.APPLY, requested_by=bob)  # nor someone else's apply
    job = latest_apply(alice)
    assert job.pk == newest.pk and job.pk != older.pk
    assert job.result == {"x": 1} and job.changed_files == [] and job.requested_by_id == alice.pk
    assert job.created_at == newest.created_at and job.state == newest.state
    assert latest_apply(bob).requested_by_id == bob.pk
