"""Admin-only pages: users, and the server settings page's Server tab (the
server identity, whether customers may add domains, internal lookup, the DKIM
key policy)."""

from django.contrib import messages
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db.models import Count, Sum
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from ..forms import ServerIdentityForm, UserAddForm, UserLimitsForm
from ..models import MailAccount, MailDomain, ServerSettings, UserProfile
from ..services import audit, customers, jobs
from ..services.users import add_user, set_active
from .common import require_admin, server_of
from .dkim import policy_section
from .server_mail import internal_lookup_context
from .pages import SETTINGS_PAGE
from .shell import Section, done, job_area, respond

USER_PAGE = "mailadmin/users/detail.html"


def user_rows():
    return (
        get_user_model()
        .objects.select_related("mail_profile")
        .annotate(domain_count=Count("mail_domains"))
        .order_by("username")
    )


@require_GET
def user_list(request):
    require_admin(request)
    users = user_rows()
    return render(request, "mailadmin/user_list.html", {"users": users, "form": UserAddForm()})


@require_POST
def user_add(request):
    require_admin(request)
    form = UserAddForm(request.POST)
    if form.is_valid():
        try:
            add_user(
                request.user,
                form.cleaned_data["username"],
                form.cleaned_data["password"],
                email=form.cleaned_data["email"],
                is_admin=form.cleaned_data["is_admin"],
            )
        except ValidationError as exc:
            form.add_error("password", exc)
        else:
            messages.success(request, _("User %(name)s added.") % {"name": form.cleaned_data["username"]})
            return redirect("mailadmin:user_list")
    users = user_rows()
    return render(request, "mailadmin/user_list.html", {"users": users, "form": form}, status=400)


@require_POST
def user_active(request, user_id):
    require_admin(request)
    user = get_object_or_404(get_user_model(), pk=user_id)
    try:
        set_active(request.user, user, request.POST.get("active") == "1")
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        if user.is_active:
            messages.success(request, _("%(name)s can log in again.") % {"name": user.username})
        else:
            messages.success(request, _("%(name)s can no longer log in.") % {"name": user.username})
    return redirect("mailadmin:user_list")


# --- the server settings page's Server tab -------------------------------------


def identity_context(request, form=None) -> dict:
    return {"form": form or ServerIdentityForm(instance=server_of(request))}


def customer_domains_context(request) -> dict:
    return {"customers_add_domains": server_of(request).customers_add_domains}


SERVER_TAB = SETTINGS_PAGE.tab(
    "server",
    "mailadmin/server_tab.html",
    identity_context,
    customer_domains_context,
    internal_lookup_context,
    policy_section,
)
IDENTITY = SETTINGS_PAGE.section("server", "server-identity", "mailadmin/server_tab.html#server-identity", identity_context)
CUSTOMER_DOMAINS = SETTINGS_PAGE.section(
    "server", "customer-domains", "mailadmin/users/customer_domains.html#customer-domains", customer_domains_context
)


@require_http_methods(["GET", "POST"])
def server_settings(request):
    require_admin(request)
    if request.method == "GET":
        return respond(request, SERVER_TAB)
    form = ServerIdentityForm(request.POST, instance=ServerSettings.load())
    if not form.is_valid():
        return respond(request, IDENTITY, status=400, form=form)
    form.save()
    audit.record(request.user, "server.identity", "server", form.changed_data)
    job = jobs.request_apply(request.user)
    return done(request, IDENTITY, notice=_("Server identity saved."), job=job)


@require_POST
def customer_domains_save(request):
    require_admin(request)
    allowed = request.POST.get("customers_add_domains") == "on"
    customers.set_customers_add_domains(request.user, allowed)
    if allowed:
        notice = _("Customers can add mail domains; each stays pending until its DNS proves it is theirs.")
    else:
        notice = _("Only administrators can add mail domains now.")
    return done(request, CUSTOMER_DOMAINS, notice=notice)


# --- one user: limits and suspension ------------------------------------------


def user_context(request, user, limits_form=None) -> dict:
    profile = UserProfile.for_user(user)
    accounts = MailAccount.objects.filter(domain__owner=user)
    return {
        "subject": user,
        "profile": profile,
        "usage": {
            "domains": MailDomain.objects.filter(owner=user).count(),
            "mailboxes": accounts.count(),
            "quota_mb": accounts.aggregate(total=Sum("quota_mb"))["total"] or 0,
        },
        "limits_form": limits_form
        or UserLimitsForm(initial={f: getattr(profile, f) for f in customers.LIMIT_FIELDS}),
    }


def _user_section(name):
    return Section.of(
        USER_PAGE, name, user_context, lambda user: reverse("mailadmin:user_detail", args=[user.pk]), job_area
    )


USER_PAGE_SECTION = _user_section("user")
LIMITS = _user_section("limits")
SUSPENSION = _user_section("suspension")


def _get_user(request, user_id):
    require_admin(request)
    return get_object_or_404(get_user_model(), pk=user_id)


@require_GET
def user_detail(request, user_id):
    return respond(request, USER_PAGE_SECTION, _get_user(request, user_id))


@require_POST
def user_limits(request, user_id):
    user = _get_user(request, user_id)
    form = UserLimitsForm(request.POST)
    if form.is_valid():
        try:
            customers.set_limits(request.user, user, **form.cleaned_data)
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            return done(request, LIMITS, user, notice=_("Limits saved."))
    return respond(request, LIMITS, user, status=400, limits_form=form)


@require_POST
def user_suspend(request, user_id):
    user = _get_user(request, user_id)
    suspend = request.POST.get("suspended") == "1"
    try:
        change = customers.set_suspended(request.user, user, suspend)
    except ValidationError as exc:
        return done(request, SUSPENSION, user, error=" ".join(exc.messages))
    if suspend:
        notice = _("%(name)s is suspended: their mail domains are off and they cannot log in.")
    else:
        notice = _("%(name)s is no longer suspended: their domains work again, except those suspended on their own.")
    return done(request, SUSPENSION, user, notice=notice % {"name": user.username}, job=change.job)
