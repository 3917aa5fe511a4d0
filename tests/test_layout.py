"""The layout's rules, read from every module's imports: storage knows nothing of the application, the
application reaches the surfaces only from its composition root, and test modules share helpers, not tests."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Where the application is assembled: the only modules of bot/ that may import handlers/.
COMPOSITION_ROOTS = {"bot.app", "bot.cli.serve"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path) -> set[str]:
    """Every module a file imports, at any depth (imports inside functions count too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def reaching(paths: list[Path], forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    """The modules among `paths` that import one of the `forbidden` packages, with what they import."""
    found = {}
    for path in paths:
        bad = sorted(name for name in imported(path) if name.split(".")[0] in forbidden)
        if bad:
            found[module_name(path)] = bad
    return found


def test_storage_imports_neither_the_application_nor_the_surfaces() -> None:
    assert modules("storage")
    assert reaching(modules("storage"), ("bot", "handlers")) == {}


def test_only_the_composition_root_of_bot_imports_the_surfaces() -> None:
    found = reaching(modules("bot"), ("handlers",))
    assert set(found) <= COMPOSITION_ROOTS, found
    assert "bot.app" in found  # the rule checks something: the root does assemble the surfaces


def test_slack_surfaces_fill_templates_only_through_slack_text() -> None:
    # bot.i18n.text leaves the values as they are; Slack would act on the markup in them (bot/slack/mrkdwn.py).
    surfaces = [*modules("bot/slack"), *modules("bot/briefing"), *modules("handlers/slack")]
    found = {
        module_name(path): "bot.i18n.text"
        for path in surfaces
        if "bot.i18n.text" in imported(path) and module_name(path) != "bot.slack.mrkdwn"
    }
    assert found == {}
    assert "bot.i18n.text" in imported(ROOT / "bot" / "slack" / "mrkdwn.py")  # the rule sees that import


def test_test_modules_import_helpers_and_fakes_but_no_other_test_module() -> None:
    allowed = ("tests.helpers", "tests.fakes")
    offenders = {}
    for path in sorted((ROOT / "tests").rglob("test_*.py")):
        bad = sorted(
            name for name in imported(path) if name.startswith("tests") and not name.startswith(allowed)
        )
        if bad:
            offenders[module_name(path)] = bad
    assert offenders == {}


@pytest.mark.parametrize(
    ("source", "forbidden", "caught"),
    [
        ("from bot.config import Settings\n", ("bot",), True),
        ("def f():\n    import handlers.http.api\n", ("handlers",), True),
        ("from storage.models import Status\n", ("bot", "handlers"), False),
    ],
)
def test_the_import_check_sees_imports_at_any_depth(
    tmp_path: Path, source: str, forbidden: tuple[str, ...], caught: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    path = tmp_path / "storage" / "example.py"
    path.parent.mkdir()
    path.write_text(source)
    assert bool(reaching([path], forbidden)) is caught
