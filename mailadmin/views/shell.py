"""One shape for every section of every page.

A Section is a value: the partial it is drawn by, the whole page it lives on,
the function that builds its context, the function that builds the rest of the
page around it, and the URL that shows it. respond() is the only place that
chooses between the partial (an htmx request) and the whole page (everything
else), and it always says so with `Vary`, so a cache never hands a partial to
a browser that asked for a page. done() is what a change answers.

A page that holds many forms is a TabbedPage: each tab is a Section of its own
with its own URL (a link without JavaScript; htmx swaps the tab and pushes the
URL), and a view renders only the tab the person is looking at.

A feature adds a Section next to its views; no view writes its own
htmx-or-page branch.
"""

import functools
from collections.abc import Callable
from dataclasses import dataclass

from django.contrib import messages
from django.shortcuts import redirect, render
from django.template import engines
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.cache import patch_vary_headers
from django.utils.safestring import mark_safe
from django.utils.translation import gettext as _

from ..services import jobs

# An htmx request that restores history after a cache miss wants the whole page.
VARY = ("HX-Request", "HX-History-Restore-Request")
# A tabbed page's tab bar (Jinja2: seven links drawn on every tab).
TAB_BAR = "mailadmin/tab_bar.html"


@dataclass(frozen=True)
class Section:
    name: str  # the element id of the partial's root, and the URL fragment
    partial: str  # "template.html#partial-name"
    page: str  # the whole page that holds the partial
    context: Callable[..., dict]  # (request, *args, **kwargs) → the partial's context
    url: Callable[..., str]  # (*args) → the page that shows this section
    page_context: Callable[..., dict] | None = None  # (request, *args) → the rest of the page

    @classmethod
    def of(cls, page: str, name: str, context, url, page_context=None) -> "Section":
        """The usual shape: the partial `name` of `page`, the element of that id."""
        return cls(name, f"{page}#{name}", page, context, url, page_context)


def fast_template(name: str, context: dict) -> str:
    """Markup drawn many times a page (the domain list's rows, the tab bar),
    by the Jinja2 engine (TEMPLATES "jinja2", templates/jinja2/): it
    autoescapes every value, so its output is safe HTML for the Django page
    around it."""
    return mark_safe(engines["jinja2"].get_template(name).render(context))


def wants_partial(request) -> bool:
    return bool(request.htmx) and not request.htmx.history_restore_request


def respond(
    request, section: Section, *args, status: int = 200, notice: str = "", error: str = "", job=None, **kwargs
):
    """The section for htmx, the whole page otherwise.

    htmx swaps only 2xx answers, so an htmx answer is 200 even when a form
    has errors; the whole page carries `status`. For htmx, `notice` and
    `error` are drawn inside the section and `job` (the job a change started)
    replaces the page's job area out of band; on a whole page they are
    messages at the top and the page's own job area."""
    ctx = section.context(request, *args, **kwargs)
    if wants_partial(request):
        ctx.update(notice=notice, error=error)
        response = render(request, section.partial, ctx)
        if job is not None:
            response.write(render_to_string("mailadmin/_job_oob.html", {"job": job}, request))
    else:
        if notice:
            messages.info(request, notice)
        if error:
            messages.error(request, error)
        if section.page_context is not None:
            ctx = {**section.page_context(request, *args), **ctx}
        response = render(request, section.page, ctx, status=status)
    patch_vary_headers(response, VARY)
    return response


def done(request, section: Section, *args, notice: str = "", error: str = "", job=None, **kwargs):
    """The answer to a change (or to one refused as a whole: `error`): htmx
    gets the fresh section in place; a plain POST is redirected to the
    section's page with the notice as a message (post/redirect/get)."""
    if wants_partial(request):
        return respond(request, section, *args, notice=notice, error=error, job=job, **kwargs)
    if notice:
        messages.success(request, notice)
    if error:
        messages.error(request, error)
    response = redirect(f"{section.url(*args)}#{section.name}")
    patch_vary_headers(response, VARY)
    return response


def job_area(request, *args) -> dict:
    """The page's job area (a `page_context`): the person's newest apply;
    after a plain POST and its redirect, the one their change started."""
    return {"job": jobs.latest_apply(request.user)}


@dataclass(frozen=True)
class Tab:
    name: str
    label: str  # lazy translation
    url_name: str


class TabbedPage:
    """A page of tabs (views.pages holds them as data). `page` draws the frame
    and holds the "tab" partial (the tab bar and one tab's panel,
    `tab_template`); `tabs` are (name, label, URL name); `url_args(*args)`
    turns the page's arguments into URL arguments and `names(*args)` into
    template names every tab uses (the domain, say)."""

    PARTIAL = "tab"

    def __init__(self, page: str, tabs: tuple[tuple[str, str, str], ...], url_args: Callable, names: Callable):
        self.page = page
        self.tabs = tuple(Tab(*tab) for tab in tabs)
        self.url_args = url_args
        self.names = names
        self._panels: dict[str, tuple[str, tuple[Callable[..., dict], ...]]] = {}

    def frame(self, request, *args) -> dict:
        """Around every tab: the page's names and the job area."""
        return {**self.names(*args), **job_area(request)}

    def url(self, name: str, *args) -> str:
        tab = next(tab for tab in self.tabs if tab.name == name)
        return reverse(tab.url_name, args=self.url_args(*args))

    def nav(self, current: str, *args) -> list[dict]:
        """The tab bar: the URLs from one reverse() each per process, with
        this page's arguments put in (every tab bar draws them all)."""
        values = [str(value) for value in self.url_args(*args)]
        return [
            {"name": tab.name, "label": tab.label, "url": self._pattern(tab, len(values)).format(*values),
             "current": tab.name == current}
            for tab in self.tabs
        ]

    @functools.cache
    def _pattern(self, tab: Tab, arity: int) -> str:
        """The tab's URL with each of its `arity` arguments a placeholder."""
        markers = [f"9999{i}1" for i in range(arity)]
        url = reverse(tab.url_name, args=markers).replace("{", "{{").replace("}", "}}")
        for i, marker in enumerate(markers):
            url = url.replace(marker, "{%d}" % i)
        return url


    def tab(self, name: str, template: str, *contexts: Callable[..., dict]) -> Section:
        """The Section that shows one whole tab: `template` is its panel, the
        `contexts` (request, *args) → dict build what the panel shows."""
        self._panels[name] = (template, contexts)

        def context(request, *args, **kwargs):
            return {**self._panel_context(name, request, *args), **kwargs}

        return Section(
            name=self.PARTIAL,
            partial=f"{self.page}#{self.PARTIAL}",
            page=self.page,
            context=context,
            url=lambda *args: self.url(name, *args),
            page_context=self.frame,
        )

    def section(self, tab: str, name: str, partial: str, context: Callable[..., dict]) -> Section:
        """A Section inside tab `tab` (context is one of the tab's contexts):
        htmx swaps it alone; a whole page draws the frame and the tab around
        it, building the rest of the panel but not this section twice."""

        def page_context(request, *args):
            ctx = self.frame(request, *args)
            ctx.update(self._panel_context(tab, request, *args, skip=context))
            return ctx

        return Section(
            name=name,
            partial=partial,
            page=self.page,
            context=context,
            url=lambda *args: self.url(tab, *args),
            page_context=page_context,
        )

    def _panel_context(self, name, request, *args, skip=None) -> dict:
        template, contexts = self._panels[name]
        ctx = {
            "tab_bar": fast_template(TAB_BAR, {"tabs": self.nav(name, *args), "label": _("Sections of this page")}),
            "current_tab": name,
            "tab_template": template,
            **self.names(*args),
        }
        for build in contexts:
            if build is not skip:
                ctx.update(build(request, *args))
        return ctx
