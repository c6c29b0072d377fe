from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils.translation import gettext as _

from . import audit


def add_user(actor, username: str, password: str, email: str = "", is_admin: bool = False):
    User = get_user_model()
    if User.objects.filter(username__iexact=username).exists():
        raise ValidationError(_("This user name is taken."))
    user = User(username=username, email=email, is_staff=is_admin)
    validate_password(password, user)
    user.set_password(password)
    with transaction.atomic():
        user.save()
        audit.record(actor, "user.add", username, ["username", "email", "is_staff", "password"])
    return user


def set_active(actor, user, active: bool):
    """Deactivated users cannot log in; their domains keep working."""
    if user.pk == getattr(actor, "pk", None) and not active:
        raise ValidationError(_("You cannot deactivate your own account."))
    if user.is_active == active:
        return user
    user.is_active = active
    with transaction.atomic():
        user.save(update_fields=["is_active"])
        audit.record(actor, "user.activate" if active else "user.deactivate", user.username, ["is_active"])
    return user
