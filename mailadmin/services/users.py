from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils.translation import gettext as _

from ..usernames import MAX_LENGTH, name_taken, username_key
from . import audit


def add_user(actor, username: str, password: str, email: str = "", is_admin: bool = False):
    """The name is stored as its key (usernames.username_key), so no two users
    differ only by case, width or surrounding spaces."""
    User = get_user_model()
    username = username_key(username)
    if not username:
        raise ValidationError(_("Enter a user name."))
    if len(username) > MAX_LENGTH:
        raise ValidationError(
            _("A user name has at most %(max)d characters.") % {"max": MAX_LENGTH}
        )
    User.username_validator(username)
    if name_taken(username):
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
