"""Admin-only pages: users and the server identity."""

from django.contrib import messages
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db.models import Count
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from django.db.models import Sum
from django.urls import reverse

from ..forms import ServerIdentityForm, UserAddForm, UserLimitsForm
from ..models import MailAccount, MailDomain, ServerSettings, UserProfile
from ..services import audit, customers, jobs
from ..services.users import add_user, set_active
from .common import require_admin
from .sections import settings_sections_context

USER_PAGE = "mailadmin/users/detail.html"
CUSTOMER_DOMAINS = "mailadmin/users/customer_domains.html"


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


@require_http_methods(["GET", "POST"])
def server_settings(request):
    require_admin(request)
    server = ServerSettings.load()
    form = ServerIdentityForm(request.POST or None, instance=server)
    if request.method == "POST":
        if form.is_valid():
            form.save()
            audit.record(request.user, "server.identity", "server", form.changed_data)
            jobs.request_apply(request.user)
            messages.success(request, _("Server identity saved."))
            return redirect("mailadmin:server_settings")
        return render(
            request,
            "mailadmin/server_settings.html",
            {"form": form, **settings_sections_context(request)},
            status=400,
        )
    return render(
        request, "mailadmin/server_settings.html", {"form": form, **settings_sections_context(request)}
    )


# --- one user: limits and suspension ------------------------------------------


def user_context(user, **extra) -> dict:
    profile = UserProfile.for_user(user)
    accounts = MailAccount.objects.filter(domain__owner=user)
    ctx = {
        "subject": user,
        "profile": profile,
        "usage": {
            "domains": MailDomain.objects.filter(owner=user).count(),
            "mailboxes": accounts.count(),
            "quota_mb": accounts.aggregate(total=Sum("quota_mb"))["total"] or 0,
        },
        "limits_form": UserLimitsForm(initial={f: getattr(profile, f) for f in customers.LIMIT_FIELDS}),
    }
    ctx.update(extra)
    return ctx


def _user_response(request, user, partial, notice="", status=200, **extra):
    """htmx: the section; else redirect after a change, the page with errors otherwise."""
    if request.htmx:
        return render(request, f"{USER_PAGE}#{partial}", user_context(user, notice=notice, **extra))
    if status == 200:
        if notice:
            messages.success(request, notice)
        return redirect(reverse("mailadmin:user_detail", args=[user.pk]) + f"#{partial}")
    return render(request, USER_PAGE, user_context(user, **extra), status=status)


@require_GET
def user_detail(request, user_id):
    require_admin(request)
    user = get_object_or_404(get_user_model(), pk=user_id)
    return render(request, USER_PAGE, user_context(user))


@require_POST
def user_limits(request, user_id):
    require_admin(request)
    user = get_object_or_404(get_user_model(), pk=user_id)
    form = UserLimitsForm(request.POST)
    if form.is_valid():
        try:
            customers.set_limits(request.user, user, **form.cleaned_data)
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            return _user_response(request, user, "limits", _("Limits saved."))
    return _user_response(request, user, "limits", status=400, limits_form=form)


@require_POST
def user_suspend(request, user_id):
    require_admin(request)
    user = get_object_or_404(get_user_model(), pk=user_id)
    suspend = request.POST.get("suspended") == "1"
    try:
        customers.set_suspended(request.user, user, suspend)
    except ValidationError as exc:
        if request.htmx:
            return _user_response(request, user, "suspension", " ".join(exc.messages))
        messages.error(request, " ".join(exc.messages))
        return redirect("mailadmin:user_detail", user.pk)
    if suspend:
        notice = _("%(name)s is suspended: their mail domains are off and they cannot log in.")
    else:
        notice = _("%(name)s is no longer suspended: their domains work again, except those suspended on their own.")
    return _user_response(request, user, "suspension", notice % {"name": user.username})


# --- may customers add domains? (a server settings section) --------------------


def customer_domains_section(request, server=None) -> dict:
    """Registered in sections.SETTINGS_SECTIONS."""
    server = server or ServerSettings.load_public()
    return {"customers_add_domains": server.customers_add_domains}


@require_POST
def customer_domains_save(request):
    require_admin(request)
    allowed = request.POST.get("customers_add_domains") == "on"
    server = customers.set_customers_add_domains(request.user, allowed)
    if allowed:
        notice = _("Customers can add mail domains; each stays pending until its DNS proves it is theirs.")
    else:
        notice = _("Only administrators can add mail domains now.")
    if request.htmx:
        ctx = {**customer_domains_section(request, server), "notice": notice}
        return render(request, f"{CUSTOMER_DOMAINS}#customer-domains", ctx)
    messages.success(request, notice)
    return redirect(reverse("mailadmin:server_settings") + "#customer-domains")
