"""Password login that finds the account the way throttling counts it, and
refuses suspended users (UserProfile.suspended), at login and on every later
request of a session they already had."""

from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend

from .usernames import find_user


class UsernameBackend(ModelBackend):
    """ModelBackend with the user looked up by `usernames.find_user`: any
    spelling of a name (width, case, spaces around) reaches that one account,
    and never another."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        if username is None:
            username = kwargs.get(get_user_model().USERNAME_FIELD)
        if username is None or password is None:
            return None
        user = find_user(username)
        if user is None:
            # Hash anyway, so an unknown name answers as slowly as a known one.
            get_user_model()().set_password(password)
            return None
        if user.check_password(password) and self.user_can_authenticate(user):
            return user
        return None

    def user_can_authenticate(self, user):
        profile = getattr(user, "mail_profile", None)  # none stored: not suspended
        return super().user_can_authenticate(user) and not (profile is not None and profile.suspended)

    def get_user(self, user_id):
        """The session's user with the profile in the same query (no extra
        query per request for the suspension check)."""
        try:
            user = get_user_model()._default_manager.select_related("mail_profile").get(pk=user_id)
        except get_user_model().DoesNotExist:
            return None
        return user if self.user_can_authenticate(user) else None
