"""Run real `exim` commands in a private network namespace with its own DNS.

`exim -bh` (DNSBL) and `exim -bt` / delivery by MX need answers from DNS, and
Exim reads only /etc/resolv.conf (port 53). So, as root: `unshare -mn` gives a
namespace with its own loopback (nothing leaves it) and its own mounts; inside,
a driver brings `lo` up, bind-mounts a resolv.conf naming 127.0.0.1, serves the
test's records on 127.0.0.1:53 (dnslib), optionally runs an SMTP sink on
<ip>:25 (a remote MX), runs the Exim commands and prints JSON.

    out = run_in_netns(records={"2.0.0.127.zen.example": [("A", "127.0.0.2")]},
                       runs=[["exim", "-C", conf, "-bh", "127.0.0.2"]], inputs=[smtp])
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile

DRIVER = r'''
import json, socket, subprocess, sys, threading, time
from dnslib import A, MX, QTYPE, RCODE, RR, DNSRecord, DNSLabel

cfg = json.load(open(sys.argv[1]))
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
subprocess.run(["mount", "--bind", cfg["resolv"], "/etc/resolv.conf"], check=True)
records = {k.lower().rstrip("."): v for k, v in cfg["records"].items()}
queries = []
dns_mode = cfg.get("dns", "answer")
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
if dns_mode != "none":
    sock.bind(("127.0.0.1", 53))

def answer(data):
    req = DNSRecord.parse(data)
    name = str(req.q.qname).rstrip(".").lower()
    qtype = QTYPE[req.q.qtype]
    queries.append([name, qtype])
    reply = req.reply()
    if name not in records:
        reply.header.rcode = RCODE.NXDOMAIN
    for rtype, value in records.get(name, []):
        if rtype != qtype:
            continue
        if rtype == "A":
            rdata = A(value)
        else:
            pref, host = value.split()
            rdata = MX(DNSLabel(host), int(pref))
        reply.add_answer(RR(req.q.qname, getattr(QTYPE, rtype), rdata=rdata, ttl=60))
    return reply.pack()

def serve():
    while True:
        data, peer = sock.recvfrom(4096)
        try:
            if dns_mode == "silent":  # read, note, never answer: every lookup times out
                question = DNSRecord.parse(data).q
                queries.append([str(question.qname).rstrip(".").lower(), QTYPE[question.qtype]])
                continue
            sock.sendto(answer(data), peer)
        except Exception:
            pass

if dns_mode != "none":
    threading.Thread(target=serve, daemon=True).start()

received = []
if cfg.get("sink"):
    from aiosmtpd.controller import Controller

    class Handler:
        async def handle_DATA(self, server, session, envelope):
            received.append({"sender": envelope.mail_from, "recipients": list(envelope.rcpt_tos),
                             "data": envelope.original_content.decode("utf-8", "replace")})
            return "250 OK"

    controller = Controller(Handler(), hostname=cfg["sink"], port=25)
    controller.start()

results = []
for run in cfg["runs"]:
    p = subprocess.run(run["argv"], input=run.get("input", ""), capture_output=True, text=True,
                       timeout=60)
    results.append({"rc": p.returncode, "stdout": p.stdout, "stderr": p.stderr})
deadline = time.monotonic() + cfg.get("wait_for_messages_s", 0)
while len(received) < cfg.get("expect_messages", 0) and time.monotonic() < deadline:
    time.sleep(0.02)
if cfg.get("sink"):
    controller.stop()
print(json.dumps({"results": results, "queries": queries, "received": received}))
'''


def available() -> str | None:
    """Why the namespace tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (unshare -mn and a bind mount over /etc/resolv.conf)"
    for tool in ("unshare", "ip", "mount"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


def run_in_netns(records: dict, runs: list[dict], sink_ip: str | None = None,
                 expect_messages: int = 0, timeout: float = 120, dns: str = "answer") -> dict:
    """records: {name: [("A", "127.0.0.2"), ("MX", "10 mx.example.test")]}.
    runs: [{"argv": [...], "input": "..."}]. Returns {"results", "queries", "received"}.
    dns: "answer" serves `records`; "silent" reads every query and never
    answers (a dead resolver: lookups time out); "none" has nothing on port 53."""
    with tempfile.TemporaryDirectory(prefix="exim-netns-") as tmp:
        resolv = os.path.join(tmp, "resolv.conf")
        with open(resolv, "w") as f:
            f.write("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
        config = os.path.join(tmp, "config.json")
        with open(config, "w") as f:
            json.dump(
                {
                    "resolv": resolv,
                    "records": {k: [list(r) for r in v] for k, v in records.items()},
                    "runs": runs,
                    "sink": sink_ip,
                    "expect_messages": expect_messages,
                    "wait_for_messages_s": 10 if expect_messages else 0,
                    "dns": dns,
                },
                f,
            )
        driver = os.path.join(tmp, "driver.py")
        with open(driver, "w") as f:
            f.write(DRIVER)
        proc = subprocess.run(
            ["unshare", "-mn", sys.executable, driver, config],
            capture_output=True, text=True, timeout=timeout,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"namespace driver failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
        return json.loads(proc.stdout)
