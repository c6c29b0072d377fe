"""One home for each rule: structural facts about the code that a refactoring
could quietly undo."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAILADMIN = ROOT / "mailadmin"


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, relative imports resolved against its package."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parent = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{parent}.{base}" if base else parent
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def test_cli_nouns_do_not_import_the_management_command():
    """The command imports the nouns; a noun importing the command back was a
    circle (it only worked because the import sat inside a function)."""
    offenders = {
        path.name
        for path in (MAILADMIN / "cli").glob("*.py")
        if any(name.startswith("mailadmin.management") for name in imported_modules(path))
    }
    assert offenders == set()


def test_checks_never_touch_the_orm_and_only_checks_open_smtp_conversations():
    """The shell's rule: no module both touches the ORM and runs sockets. The
    checks package talks to the network and never imports models; nothing
    outside it speaks SMTP (the one client is checks.smtp.Session)."""
    for path in (MAILADMIN / "checks").glob("*.py"):
        names = imported_modules(path)
        assert not any(name.startswith(("mailadmin.models", "django.db")) for name in names), path.name
    speakers = {
        path.relative_to(MAILADMIN).as_posix()
        for path in MAILADMIN.rglob("*.py")
        if "smtplib" in imported_modules(path) or "django.core.mail.backends.smtp" in imported_modules(path)
    }
    assert speakers == set()
