"""Talk to the privileged helper (deploy/mailpanel_helper.py).

The helper runs as root through sudo with a fixed command line; the request,
secrets included, goes on its stdin as one JSON object and one JSON object
comes back on stdout. Exit status 0 = done, 1 = failed (the last good files
are still live), 2 = request refused.
"""

import json
import shlex
import subprocess

from django.conf import settings

REFUSED = 2


class HelperError(Exception):
    """The helper refused the request, failed, or gave no usable answer.

    ``answer`` is the helper's JSON answer when it gave one (validator output,
    reload output, what was restored), else ``{}``.
    """

    def __init__(self, message, answer=None, returncode=None):
        super().__init__(message)
        self.message = message
        self.answer = answer or {}
        self.returncode = returncode

    @property
    def refused(self):
        return self.returncode == REFUSED


def call_helper(request: dict, *, timeout: float | None = None) -> dict:
    """Send one request to the helper and return its answer (``ok`` is true)."""
    command = shlex.split(settings.MAILPANEL_HELPER)
    if timeout is None:
        timeout = getattr(settings, "MAILPANEL_HELPER_TIMEOUT", 60)
    # A relative development command ("python3 deploy/mailpanel_helper.py
    # --root var/root") means relative to the project, wherever the worker runs.
    cwd = getattr(settings, "BASE_DIR", None)
    try:
        proc = subprocess.run(
            command,
            input=json.dumps(request).encode(),
            capture_output=True,
            timeout=timeout,
            cwd=cwd,
        )
    except subprocess.TimeoutExpired as e:
        raise HelperError("helper timed out after %s s" % timeout) from e
    except OSError as e:
        raise HelperError("cannot run the helper (%s): %s" % (command[0], e)) from e

    stderr = proc.stderr.decode("utf-8", "replace").strip()
    try:
        answer = json.loads(proc.stdout.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        answer = None
    if not isinstance(answer, dict):
        raise HelperError(
            "helper gave no JSON answer (exit status %d): %s"
            % (
                proc.returncode,
                stderr[-2000:] or proc.stdout[:200].decode("utf-8", "replace"),
            ),
            returncode=proc.returncode,
        )
    if proc.returncode == REFUSED:
        raise HelperError(
            "helper refused the request: %s" % answer.get("error", stderr),
            answer,
            proc.returncode,
        )
    if proc.returncode != 0 or answer.get("ok") is not True:
        raise HelperError(
            "helper failed: %s" % answer.get("error", stderr or "no reason given"),
            answer,
            proc.returncode,
        )
    return answer
