"""{% load jobs %}: a job's log and changed files as the person looking may see
them (services.jobs.shown_to). Templates never show job.log directly."""

from django import template

from ..services.jobs import shown_to

register = template.Library()


def _shown(job, user) -> tuple[str, list[str]]:
    # One computation per job and person, however often the page asks.
    cache = job.__dict__.setdefault("_shown_to", {})
    key = getattr(user, "pk", None)
    if key not in cache:
        cache[key] = shown_to(job, user)
    return cache[key]


@register.filter
def log_for(job, user) -> str:
    return _shown(job, user)[0]


@register.filter
def changed_files_for(job, user) -> list[str]:
    return _shown(job, user)[1]
