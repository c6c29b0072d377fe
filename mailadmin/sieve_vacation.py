"""The out-of-office reply as a Sieve script (RFC 5230 vacation, RFC 5260
currentdate), and the small wrapper that keeps a person's own filters running
beside it. Pure: text in, text out.

The reply goes once per sender per `DAYS` (Pigeonhole keeps the list of
senders it answered), never to mailing lists or automatic mail (Pigeonhole's
own rules), and only for mail addressed to the mailbox or one of its aliases
(`:addresses`). Dates are the server's local dates, both days included.

Everything a person typed is written as a Sieve string: quoted strings escape
\\ and ", the message is a multi-line `text:` with dot-stuffing, control
characters other than line breaks and tabs never get this far (the form
refuses them)."""

from __future__ import annotations

import datetime
import re

VACATION_SCRIPT = "mailpanel-vacation"
WRAPPER_SCRIPT = "mailpanel"
DAYS = 7
MAX_SUBJECT = 200
MAX_BODY = 10_000
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def has_control_characters(text: str) -> bool:
    """Line breaks and tabs aside."""
    return bool(_CONTROL.search(text.replace("\r\n", "\n").replace("\r", "\n")))


def quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def multiline(text: str) -> str:
    """RFC 5228 §2.4.2: text: CRLF … CRLF "." CRLF; a line starting with "."
    gets another one."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = (text[:-1] if text.endswith("\n") else text).split("\n")  # the CRLF before "." ends the last line
    stuffed = ["." + line if line.startswith(".") else line for line in lines]
    return "text:\r\n" + "\r\n".join(stuffed) + "\r\n.\r\n"


def vacation_script(
    subject: str,
    body: str,
    addresses: list[str],
    start: datetime.date | None = None,
    end: datetime.date | None = None,
) -> str:
    if has_control_characters(subject + body) or "\n" in subject or "\r" in subject:
        raise ValueError("control characters")
    require = ["vacation"]
    conditions = []
    if start is not None:
        conditions.append(f'currentdate :value "ge" "date" {quoted(start.isoformat())}')
    if end is not None:
        conditions.append(f'currentdate :value "le" "date" {quoted(end.isoformat())}')
    if conditions:
        require += ["date", "relational"]
    action = (
        f"vacation :days {DAYS} :subject {quoted(subject)}"
        f" :addresses [{', '.join(quoted(a) for a in addresses)}]\r\n  {multiline(body)};\r\n"
    )
    lines = [
        "# Written by mailpanel: the out-of-office reply. Change it in the panel.",
        f"require [{', '.join(quoted(r) for r in require)}];",
    ]
    if conditions:
        lines.append(f"if allof({', '.join(conditions)}) {{")
        return "\r\n".join(lines) + "\r\n  " + action + "}\r\n"
    return "\r\n".join(lines) + "\r\n" + action


def wrapper_script(previous: str) -> str:
    """Active instead of the person's own script `previous`: the reply first,
    then their filters, as before."""
    return "\r\n".join(
        [
            "# Written by mailpanel: the out-of-office reply, then the filters that were active before it.",
            'require ["include"];',
            f"include :personal {quoted(VACATION_SCRIPT)};",
            f"include :personal {quoted(previous)};",
            "",
        ]
    )


_INCLUDE = re.compile(r'^include :personal "((?:[^"\\]|\\.)*)";$', re.M)


def previous_of(wrapper: str) -> str | None:
    """The script a wrapper_script() keeps running, or None."""
    names = [re.sub(r"\\(.)", r"\1", m) for m in _INCLUDE.findall(wrapper.replace("\r\n", "\n"))]
    others = [n for n in names if n != VACATION_SCRIPT]
    return others[0] if len(others) == 1 else None
