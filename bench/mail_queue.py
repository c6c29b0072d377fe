"""The mail queue page with 5,000 messages in Exim's queue (issue 16).

Renders a throw-away mail tree, has the real Exim queue N messages in it
(one `exim -bs -odq` session per 500: senders and recipients spread over
20 domains, 100 of them held by a sending limit), serves the panel with
gunicorn on 127.0.0.1 with the real helper reading that spool, and prints
the median time of queue pages against the empty logged-in page (the audit
log) of the same run. Target: ≤ 300 ms a page. Must run as root (Exim's
spool); nothing leaves 127.0.0.1.

The helper runs as install.sh installs it: the small command sudo runs
(deploy/mailpanel-helper, on Debian's python3 -IS) importing the helper and
mailconf from a root-owned lib folder with their bytecode compiled there.
CPU time (user + sys) of each helper process is printed too: the machine is
shared, and load moves wall time much more than CPU time.

    .venv/bin/python bench/mail_queue.py [N]
"""

import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
N = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
RUNS = 5 if os.environ.get("BENCH_QUICK") == "1" else 15
WORK = Path(tempfile.mkdtemp(prefix="mailpanel-bench-queue-"))
DOMAINS = [f"d{i:02}.example" for i in range(20)]
HELPER = ROOT / "deploy" / "mailpanel_helper.py"
PREFIX = WORK / "usr-local"  # sbin/mailpanel-helper, lib/mailpanel-helper/ (install.sh's layout)
ENTRY = PREFIX / "sbin" / "mailpanel-helper"

sys.path.insert(0, str(ROOT))
from mailconf.snapshot import Domain, Mailbox, Relay, SendLimits, ServerIdentity, Snapshot  # noqa: E402
from served import Gunicorn, median_time, ms, session_cookie  # noqa: E402
from tests import mailstack  # noqa: E402


def fill_queue(layout, count):
    """count messages through real Exim, queued only; the last 100 of them
    from www-data, mapped to d00.example and past its limit (held)."""
    start = time.perf_counter()
    plain = count - 100

    def session(first):
        lines = [b"EHLO bench.example"]
        for n in range(first, min(first + 500, plain)):
            sender = f"s{n}@{DOMAINS[n % 20]}"
            rcpt = f"r{n}@{DOMAINS[(n * 7) % 20]}" if n % 3 else f"r{n}@remote.example"
            body = mailstack.make_message(sender, rcpt, subject=f"bench {n}").replace(b"\n", b"\r\n") + b"."
            lines += [f"MAIL FROM:<{sender}>".encode(), f"RCPT TO:<{rcpt}>".encode(), b"DATA", body]
        lines.append(b"QUIT")
        mailstack._exim(layout, "-odq", "-bs", input=b"\r\n".join(lines) + b"\r\n", timeout=600)

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        list(pool.map(session, range(0, plain, 500)))
    lines = [b"EHLO bench.example"]
    for n in range(100):
        body = mailstack.make_message("web@d00.example", f"w{n}@remote.example", subject=f"web {n}")
        lines += [b"MAIL FROM:<web@d00.example>", f"RCPT TO:<w{n}@remote.example>".encode(), b"DATA",
                  body.replace(b"\n", b"\r\n") + b"."]
    lines.append(b"QUIT")
    mailstack._exim(layout, "-odq", "-oMt", "www-data", "-bs", input=b"\r\n".join(lines) + b"\r\n", timeout=600)
    queued = len(list((Path(layout.path(layout.spool_dir)) / "input").glob("*-H")))
    return queued, time.perf_counter() - start


def install_helper():
    """What deploy/install.sh's helper() does, under PREFIX."""
    lib = PREFIX / "lib" / "mailpanel-helper"
    lib.mkdir(parents=True)
    (PREFIX / "sbin").mkdir()
    shutil.copy(ROOT / "deploy" / "mailpanel-helper", ENTRY)
    shutil.copy(HELPER, lib / "mailpanel_helper.py")
    shutil.copytree(ROOT / "mailconf", lib / "mailconf", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(["/usr/bin/python3", "-I", "-m", "compileall", "-q", "--invalidation-mode", "checked-hash",
                    str(lib)], check=True)
    for path in [PREFIX, *PREFIX.rglob("*")]:
        path.chmod(0o755 if path.is_dir() or path == ENTRY else 0o644)


def main():
    if os.geteuid() != 0:
        sys.exit("bench/mail_queue.py runs as root (it reads Exim's spool through the helper)")
    mailstack.TREES = WORK / "trees"
    snapshot = Snapshot(
        server=ServerIdentity(hostname="mx.bench.example"),
        domains=tuple(Domain(name, dkim_enabled=False, mailboxes=(Mailbox("box", "{PLAIN}x"),),
                             catchall=f"box@{name}",  # every r<n>@ passes the RCPT check
                             local_senders=("www-data",) if name == "d00.example" else ())
                      for name in DOMAINS),
        global_relay=Relay("127.0.0.1", 9, tls="none"),
        send_limits=SendLimits(per_hour=1),
    )
    layout = mailstack.render_tree(snapshot, WORK)
    queued, seconds = fill_queue(layout, N)
    print(f"queued {queued} messages with real Exim in {seconds:.1f} s", flush=True)

    os.environ.update({
        "DJANGO_SETTINGS_MODULE": "panel.settings",
        "DATABASE_URL": f"sqlite:///{WORK / 'bench.sqlite3'}",
        "MAILPANEL_VAR_DIR": str(WORK / "var"),
        "MAILPANEL_ROOT": layout.root,
        "MAILPANEL_HELPER": f"{ENTRY} --root {layout.root}",
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,testserver",
        "MAILPANEL_LOG_LEVEL": "WARNING",
    })
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from mailadmin.models import MailDomain

    call_command("migrate", verbosity=0)
    User = get_user_model()
    admin = User.objects.create_user("bench-admin", password="x", is_staff=True)
    customer = User.objects.create_user("bench-customer", password="x")
    MailDomain.objects.bulk_create([MailDomain(name=name, owner=customer if i < 2 else admin)
                                    for i, name in enumerate(DOMAINS)])

    install_helper()
    cache = Path(layout.root) / "var/cache/mailpanel-helper/queue-envelopes"

    spool_input = Path(layout.path(layout.spool_dir)) / "input"

    def helper_run(request, argv=(str(ENTRY),), cold=""):
        """(wall, CPU) seconds of one helper process: CPU time moves less with
        the machine's load than wall time does. cold="cache": without the
        envelope cache (as after every message changed); "spool": the spool
        folder just changed (as while mail flows: each -H file is stat'ed)."""
        if cold == "cache":
            cache.unlink(missing_ok=True)
        elif cold == "spool":
            os.utime(spool_input)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        out = subprocess.run([*argv, "--root", layout.root],
                             input=json.dumps(request).encode(), capture_output=True).stdout
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        return wall, cpu, json.loads(out)

    helper_rows = []
    refused = {"op": "queue_show", "id": "x"}
    two_domains = {"op": "queue_list", "domains": DOMAINS[:2], "limit": 50}
    installed = (str(ENTRY),)
    for name, request, argv, cold in (
        ("refused request (the fixed cost), installed", refused, installed, ""),
        ("refused request, run from the checkout (compiled every run)", refused,
         ("/usr/bin/python3", "-I", str(HELPER)), ""),
        ("last page, no filter", {"op": "queue_list", "offset": queued - 50, "limit": 50}, installed, ""),
        ("held only", {"op": "queue_list", "held": True, "limit": 50}, installed, ""),
        ("one domain", {"op": "queue_list", "domains": [DOMAINS[7]], "limit": 50}, installed, ""),
        ("two domains (a customer), spool settled", two_domains, installed, ""),
        ("two domains, spool just changed (each -H file stat'ed)", two_domains, installed, "spool"),
        ("two domains, no envelope cache (every -H file read)", two_domains, installed, "cache"),
    ):
        helper_run(request, argv)  # the cache as a page before it left it
        runs = [helper_run(request, argv, cold) for _ in range(RUNS)]
        helper_rows.append((name, statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)))

    admin_cookie, customer_cookie = session_cookie(admin), session_cookie(customer)
    server = Gunicorn(workers=2)
    rows = []
    try:
        for _ in range(3):
            server.get("/audit/", admin_cookie)
            server.get("/queue/", admin_cookie)
        floor = median_time(lambda: server.get("/audit/", admin_cookie), RUNS)
        pages = {
            "queue, page 1 (admin)": ("/queue/", admin_cookie),
            f"queue, page {queued // 50} of {queued // 50} (admin)": (f"/queue/?page={queued // 50}", admin_cookie),
            "queue, held only (admin)": ("/queue/?state=held", admin_cookie),
            "queue, one domain (admin)": ("/queue/?domain=d07.example", admin_cookie),
            "queue, sender filter (admin)": ("/queue/?sender=s4999%40", admin_cookie),
            "queue, a customer's 2 domains": ("/queue/", customer_cookie),
        }
        for name, (path, cookie) in pages.items():
            rows.append((name, median_time(lambda: server.get(path, cookie), RUNS)))
    finally:
        server.stop()

    print(f"load average while measuring: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    for name, wall, cpu in helper_rows:
        print(f"helper alone, {name}: {ms(wall)} wall, {ms(cpu)} CPU")
    print(f"empty logged-in page (audit log): {ms(floor)}")
    worst = max(seconds for _name, seconds in rows)
    for name, seconds in rows:
        print(f"{name}: {ms(seconds)} ({seconds / floor:.1f}× the empty page)")
    verdict = "met" if worst <= 0.300 else "MISSED"
    print(f"queue list with {queued} messages: slowest page {ms(worst)} "
          f"(≤ 300 ms: {verdict}); empty page {ms(floor)}, ratio {worst / floor:.1f}×")


if __name__ == "__main__":
    try:
        main()
    finally:
        if os.environ.get("BENCH_KEEP") == "1":  # for profiling: print where it is
            mailstack._trees.clear()
            print(f"kept {WORK}")
        else:
            shutil.rmtree(WORK, ignore_errors=True)
