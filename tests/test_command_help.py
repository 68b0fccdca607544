"""``steerlab noise --help`` and ``steerlab intent optimize --help``: every option has a description and the
positional argument is named RUN_DIR."""

import re

import pytest

from steerlab.cli import main


def help_entries(out: str) -> dict[str, str]:
    """The options of a tyro help text (boxed or plain), ``{signature: description}``: after the ``options``
    heading, an entry starts at a line whose text begins with ``-``; its description is what follows the signature
    on that line (after two or more spaces) and on the continuation lines, without tyro's ``(default: ...)`` and
    ``(required)`` notes."""
    entries: dict[str, list[str]] = {}
    current = None
    in_options = False
    for line in out.splitlines():
        text = line.strip().strip("│╭╮╰╯─ ")
        if re.fullmatch(r"options:?", text):
            in_options = True
            continue
        if not in_options or re.fullmatch(r"[-─ ]*", text):
            continue
        if text.startswith("-"):
            signature, _, rest = (text + "  ").partition("  ")
            current = signature
            entries[current] = [rest.strip()]
        elif current is not None:
            entries[current].append(text)
    described = {}
    for sig, parts in entries.items():
        desc = " ".join(p for p in parts if p)
        described[sig] = re.sub(r"\(default:[^)]*\)", "", desc).replace("(required)", "").strip()
    return described


@pytest.mark.parametrize("argv", [["noise", "--help"], ["intent", "optimize", "--help"]])
def test_every_option_has_a_description(argv, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert re.search(r"usage: .*\bRUN_DIR\b", out), out
    assert not re.search(r"\bSTR\s*$", out.splitlines()[0])
    entries = help_entries(out)
    assert sum(s.startswith("--") for s in entries) > 10, out
    missing = [sig for sig, desc in entries.items() if not re.search(r"[A-Za-z]", desc)]
    assert not missing, f"options without a description: {missing}\n{out}"
