"""The hand-written configuration page says what the traits say (the reference is generated)."""

from __future__ import annotations

import re

from helpers import REPO

from jupyter_persist.app import PersistExtension

CONFIGURATION = REPO / "docs" / "configuration.md"


def documented_defaults() -> dict[str, list[str]]:
    """Per trait named in a heading of configuration.md, the defaults its first line gives."""
    sections = re.split(r"^## ", CONFIGURATION.read_text(), flags=re.MULTILINE)[1:]
    found: dict[str, list[str]] = {}
    for section in sections:
        heading, _, body = section.partition("\n")
        names = re.findall(r"`(?:PersistExtension\.)?([a-z_]+)`", heading)
        first_line = body.strip().split("\n\n")[0]
        defaults = re.findall(r"`([^`]+)`", first_line.split("default", 1)[-1])
        for index, name in enumerate(names):
            found[name] = defaults[index : index + 1] if len(names) > 1 else defaults[:1]
    return found


def test_every_setting_has_a_section_with_its_default() -> None:
    documented = documented_defaults()
    for name, trait in PersistExtension.class_own_traits(config=True).items():
        assert name in documented, f"docs/configuration.md has no section on {name}"
        default = trait.default_value
        if isinstance(default, (bool, int, float)):  # the others depend on the machine
            assert documented[name] == [str(default)], (name, documented[name], default)
