import os
from dataclasses import replace
from pathlib import Path

from ..helper_client import HelperError
from mailconf.render import render_all
from ..services.apply import apply_now, build_snapshot, layout_from_settings
from django.conf import settings
from django.core.management.base import CommandError

from ..models import MailNode


def register(nouns):
    parser = nouns.add_parser("config", help="render or apply the managed files")
    verbs = parser.add_subparsers(dest="verb", required=True)
    render = verbs.add_parser("render", help="write every managed file under DIR")
    render.add_argument("--out", required=True)
    render.set_defaults(handler=config_render)
    apply = verbs.add_parser("apply", help="apply now through the helper (synchronous)")
    apply.set_defaults(handler=config_apply)
    for verb in (render, apply):
        verb.add_argument("--node", default="", help="the mail node's files (default: MAILPANEL_NODE; one node: it)")


def chosen_node(options):
    """With several mail nodes each has its own files: which one. None (the
    whole database, the server settings' identity) when there is one node."""
    name = options.get("node") or settings.MAILPANEL_NODE
    if name:
        node = MailNode.objects.filter(name=name).first()
        if node is None:
            raise CommandError(f"no mail node {name!r}")
        return node
    if MailNode.objects.count() > 1:
        raise CommandError("there are several mail nodes: say which with --node NAME (or MAILPANEL_NODE)")
    return None


def write_tree(files, out: Path) -> None:
    for path, spec in sorted(files.items()):
        target = out / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, spec.mode)
        with os.fdopen(fd, "wb") as f:
            f.write(spec.content)
        os.chmod(target, spec.mode)


def config_render(command, options):
    out = Path(options["out"]).resolve()
    layout = replace(layout_from_settings(), root=str(out))
    files = render_all(build_snapshot(node=chosen_node(options)), layout)
    write_tree(files, out)
    command.stdout.write(f"rendered {len(files)} files under {out}")


def config_apply(command, options):
    try:
        answer = apply_now(command.stdout.write, node=chosen_node(options))
    except HelperError as exc:
        raise CommandError(f"apply failed: {exc}")
    written, removed = answer.get("written", []), answer.get("removed", [])
    command.stdout.write(f"applied: {len(written)} written, {len(removed)} removed")
