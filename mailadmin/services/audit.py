from ..models import AuditEntry


def record(actor, action: str, target: str = "", fields=()) -> AuditEntry:
    """Field names only: values may be secrets."""
    return AuditEntry.objects.create(
        actor=actor if getattr(actor, "pk", None) else None,
        actor_name=getattr(actor, "username", "") or "system",
        action=action,
        target=target,
        fields=sorted(fields),
    )
