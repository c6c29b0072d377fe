"""简体中文 from the start: the zh-Hans catalog covers every string in the code."""

import re
import shutil
from pathlib import Path

import polib
import pytest
from django.core.management import call_command

ROOT = Path(__file__).resolve().parent.parent
CATALOG = ROOT / "locale" / "zh_Hans" / "LC_MESSAGES" / "django.po"

pytestmark = pytest.mark.skipif(not shutil.which("xgettext"), reason="GNU gettext is not installed")


def entries(po):
    return {(e.msgctxt, e.msgid) for e in po if not e.obsolete}


def test_catalog_has_a_translation_for_every_entry():
    po = polib.pofile(str(CATALOG))
    untranslated = [e.msgid for e in po.untranslated_entries()]
    fuzzy = [e.msgid for e in po.fuzzy_entries()]
    assert not untranslated, f"{len(untranslated)} untranslated, e.g. {untranslated[:5]}"
    assert not fuzzy, f"{len(fuzzy)} fuzzy, e.g. {fuzzy[:5]}"


def test_catalog_covers_every_translatable_string_in_the_code(tmp_path, settings, monkeypatch):
    # makemessages writes into any locale/ folder it walks past: extract from a
    # copy of the sources so the real catalog is never touched.
    for folder in ("panel", "mailadmin", "templates"):
        shutil.copytree(ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__"))
    settings.LOCALE_PATHS = [tmp_path / "locale"]
    monkeypatch.chdir(tmp_path)
    call_command("makemessages", locale=["zh_Hans"], verbosity=0)
    fresh = polib.pofile(str(tmp_path / "locale" / "zh_Hans" / "LC_MESSAGES" / "django.po"))
    missing = entries(fresh) - entries(polib.pofile(str(CATALOG)))
    assert not missing, f"{len(missing)} strings are not in the catalog, e.g. {sorted(missing, key=str)[:5]}"


PLACEHOLDER = re.compile(r"%\(\w+\)[sd]|\{\{ ?\w+ ?\}\}|%[sd]")


def test_placeholders_survive_translation():
    for entry in polib.pofile(str(CATALOG)).translated_entries():
        if entry.msgid_plural:
            # Chinese has one plural form: it reads the plural's placeholders.
            wanted = sorted(PLACEHOLDER.findall(entry.msgid_plural))
            translations = list(entry.msgstr_plural.values())
        else:
            wanted = sorted(PLACEHOLDER.findall(entry.msgid))
            translations = [entry.msgstr]
        for translation in translations:
            assert sorted(PLACEHOLDER.findall(translation)) == wanted, entry.msgid
