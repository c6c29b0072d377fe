"""Admins' mail nodes page: every node with its heartbeat, last apply and
version, flagged when it has not answered for MAILPANEL_NODE_STALE_SECONDS;
a node is added here (services.nodes) and a domain moved from its page."""

from django.core.exceptions import ValidationError
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from ..forms import MailNodeForm
from ..models import MailNode
from ..services import domain_move as moves, jobs, nodes
from .common import get_domain_for_user, require_admin
from .shell import Section, done, respond

PAGE = "mailadmin/nodes.html"


def nodes_context(request, form=None) -> dict:
    return {
        "node_rows": nodes.node_rows(timezone.now()),
        "stale_seconds": nodes.stale_after().total_seconds(),
        "node_form": form or MailNodeForm(),
        "multi_node": jobs.multi_node(),
    }


NODES = Section.of(PAGE, "nodes", nodes_context, lambda: reverse("mailadmin:node_list"))


@require_http_methods(["GET", "POST"])
def node_list(request):
    require_admin(request)
    if request.method == "GET":
        return respond(request, NODES)
    try:
        node = nodes.add_node(request.user, request.POST)
    except ValidationError as exc:
        form = MailNodeForm(request.POST)
        if form.is_valid():  # refused as a whole (no RQ): the message, not a field
            return respond(request, NODES, status=400, error=" ".join(exc.messages))
        return respond(request, NODES, status=400, form=form)
    return done(request, NODES, notice=_("Node %(name)s added.") % {"name": node.name})


@require_POST
def domain_move(request, domain_id):
    """Admins only: the domain's configuration moves to another node."""
    require_admin(request)
    domain = get_domain_for_user(request, domain_id)
    node = MailNode.objects.filter(pk=request.POST.get("node") or 0).first()
    from .domain_page import SETTINGS_SECTION_FOR_NODE as section

    action = request.POST.get("action")
    if action in ("confirm", "retry"):
        move = moves.live_move(domain)
        if move is None:
            return done(request, section, domain, error=_("This domain is not moving."))
        try:
            (moves.confirm if action == "confirm" else moves.retry)(request.user, move)
        except ValidationError as exc:
            return done(request, section, domain, error=" ".join(exc.messages))
        notice = _("Confirmed: the last copy runs, then the old node lets go.") if action == "confirm" else _("Queued again.")
        return done(request, section, domain, notice=notice)
    if node is None:
        return done(request, section, domain, error=_("Choose a node."))
    try:
        change = nodes.move_domain(request.user, domain, node)
    except ValidationError as exc:
        return done(request, section, domain, error=" ".join(exc.messages))
    notice = _("%(domain)s moves to node %(node)s.") % {"domain": domain.unicode_name, "node": node.name}
    return done(request, section, domain, notice=notice if change.changed else "", job=change.job)
