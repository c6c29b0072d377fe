""""Test relay" as a background check on the "checks" queue.

The request only starts a job (rate-limited per user, services.user_checks);
the worker resolves the host, refuses a customer's non-public target
(checks.targets), talks to the relay (checks.relay) and stores the
redacted transcript as the job's result, which the relay section polls. No
gunicorn worker waits on a remote server.

The job is a DIAGNOSE job whose result says what="relay" (a JobKind of its own
would be a migration). What to test waits in the job's result, the password as
a Fernet token like every stored secret, and the worker removes it before it
connects anywhere: the task queue's own row never holds it, and the finished
job holds only the outcome.
"""

from django.conf import settings
from django.db import transaction

from mailconf import snapshot as snap
from .. import crypto
from ..checks import relay as checks
from ..checks import targets
from ..models import Job, JobKind, is_admin
from . import dns_checks, jobs, relay, user_checks

TASK = "mailadmin.tasks_dns.relay_test"
WHAT = "relay"


def start_relay_test(actor, domain, target: snap.Relay) -> Job:
    """Raises user_checks.TooManyChecks over the user's limit."""
    request = {
        "host": target.host,
        "port": target.port,
        "tls": target.tls,
        "auth": target.auth,
        "username": target.username,
        "password": crypto.encrypt(target.password) if target.password else "",
        # decided now, from who asked: admins may test hosts on private networks
        "public_only": not is_admin(actor),
    }
    return user_checks.start_check(
        actor, JobKind.DIAGNOSE, domain, TASK, result={"what": WHAT, "request": request}
    )


def _take_request(job_id: int) -> dict:
    """The job's request, removed from the row in the same transaction."""
    with transaction.atomic():
        job = Job.objects.select_for_update().get(pk=job_id)
        request = job.result.get("request") or {}
        Job.objects.filter(pk=job_id).update(result={"what": WHAT})
    return request


def run_relay_test_job(job_id: int) -> None:
    def work(job, log):
        request = _take_request(job.pk)
        job.result = {"what": WHAT}  # a crash must not save the token back
        token = request.get("password") or ""
        target = snap.Relay(
            host=request["host"],
            port=int(request["port"]),
            username=request.get("username") or "",
            password=crypto.decrypt(token) if token else "",
            auth=request["auth"],
            tls=request["tls"],
        )
        outcome = relay_check(target, public_only=request.get("public_only", True))
        log([f"relay test {target.host}:{target.port}: {outcome.outcome}"])
        return {"what": WHAT, "relay": outcome.as_dict()}

    # crash_detail=False: a socket error's text could name the typed host's answer
    jobs.run_job(job_id, lambda job, log: work(job, log.extend), crash_detail=False)


def relay_check(target: snap.Relay, *, public_only: bool) -> checks.RelayTestResult:
    """One relay test; with public_only the target must pass checks.targets
    and the conversation goes to the addresses that passed."""
    addresses = None
    if public_only:
        allow_loopback = settings.MAILPANEL_CUSTOMER_TARGETS_ALLOW_LOOPBACK
        resolution = dns_checks.resolve_target(target.host, allow_loopback)
        if not resolution.ok:
            outcome = {
                "refused": checks.TARGET_REFUSED,
                "not_found": checks.HOST_NOT_FOUND,
            }.get(resolution.outcome, checks.UNREACHABLE)
            return checks.RelayTestResult(outcome=outcome, message=resolution.message)
        addresses = resolution.addresses
    return checks.check_relay(target, addresses=addresses, **relay.check_options())


def result_of(job: Job | None) -> dict | None:
    """The finished test's result for the template (None while it runs)."""
    if job is None or not job.finished:
        return None
    return job.result.get("relay")
