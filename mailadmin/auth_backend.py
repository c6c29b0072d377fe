"""Password login that finds the account the way throttling counts it."""

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
