"""Admin-only pages: users and the server identity."""

from django.contrib import messages
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db.models import Count
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from ..forms import ServerIdentityForm, UserAddForm
from ..models import ServerSettings
from ..services import audit, jobs
from ..services.users import add_user, set_active
from .common import require_admin
from .sections import settings_sections_context


@require_GET
def user_list(request):
    require_admin(request)
    users = get_user_model().objects.annotate(domain_count=Count("mail_domains")).order_by("username")
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
    users = get_user_model().objects.annotate(domain_count=Count("mail_domains")).order_by("username")
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
