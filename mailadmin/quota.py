"""Mailbox usage as Dovecot records it (Maildir++ maildirsize), read through
the privileged helper: the panel cannot read the Maildirs itself. No ORM."""

from .helper_client import HelperError, call_helper


def mailbox_usage(domain_name: str) -> dict[str, dict] | None:
    """{local part: {"bytes", "messages"}} for mailboxes Dovecot has counted;
    None when the helper cannot tell (shown as "unknown", never as zero)."""
    try:
        return call_helper({"op": "quota_usage", "domain": domain_name}).get("usage", {})
    except HelperError:
        return None
