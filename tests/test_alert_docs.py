"""The documented alert JSON and the Pine template's messages, rendered as TradingView
renders them (placeholders filled, the template's default inputs), are valid alerts."""

from __future__ import annotations

import re
from pathlib import Path

from esml.decision.alerts import parse_alert
from esml.market.side import Side

ROOT = Path(__file__).resolve().parents[1]
PLACEHOLDERS = {
    "{{ticker}}": "ES1!",
    "{{strategy.order.action}}": "buy",
    "{{strategy.order.contracts}}": "2",
    "{{strategy.market_position}}": "long",
    "{{close}}": "5772.25",
    "{{timenow}}": "2025-03-07T15:30:05Z",
}


def render(template: str) -> str:
    for placeholder, value in PLACEHOLDERS.items():
        template = template.replace(placeholder, value)
    return template


def pine_message(function: str) -> str:
    """The string a Pine message function builds, with the inputs at their defaults."""
    source = (ROOT / "docs/pine/esml_strategy.pine").read_text()
    defaults = {
        name: value.strip('"')
        for name, value in re.findall(r"^(\w+)\s*=\s*input\.\w+\(([^,]+),", source, re.M)
    }
    body = source.split(f"{function}() =>", 1)[1].split("\n\n", 1)[0]
    parts = re.findall(
        r"'([^']*)'|str\.tostring\((\w+)(?:, \"([^\"]+)\")?\)|\((\w+) \? 'true' : 'false'\)"
        r"|(?<![\w'])(\w+)(?= \+)",
        body,
    )
    out = []
    for literal, number, fmt, flag, name in parts:
        if number:
            value = defaults[number]
            out.append(f"{float(value):.2f}" if fmt else value)
        elif flag:
            out.append(defaults[flag])
        elif name:
            out.append(defaults[name])
        else:
            out.append(literal)
    return "".join(out)


def test_the_pine_template_sends_valid_alerts() -> None:
    entry = parse_alert(render(pine_message("entryMessage")))
    assert (entry.action, entry.contracts, entry.market_position) == ("buy", 2, "long")
    assert entry.passphrase.get_secret_value() == "change-me"
    assert entry.bracket_ticks(Side.BUY) == [(1, 8, 8), (1, 8, 16)]
    assert entry.breakeven_after_tp1 and entry.confidence == 0.9
    assert entry.trail is None
    trailing = parse_alert(render(pine_message("trailEntryMessage")))
    assert trailing.bracket_ticks(Side.BUY) == [(1, 8, 8), (1, 8, 16)]
    assert trailing.trail_ticks(Side.BUY) == 8
    exit_ = parse_alert(render(pine_message("exitMessage")))
    assert exit_.action == "exit" and exit_.contracts is None


def test_the_documented_alert_is_valid() -> None:
    doc = (ROOT / "docs/alerts.md").read_text()
    block = doc.split("```json", 1)[1].split("```", 1)[0]
    alert = parse_alert(render(block))
    assert alert.contract_symbol() == "ESH5" and alert.targets is not None


def test_the_documented_trailing_stop_alert_is_valid() -> None:
    doc = (ROOT / "docs/alerts.md").read_text()
    section = doc.split("## Trailing stop", 1)[1]
    alert = parse_alert(section.split("```json", 1)[1].split("```", 1)[0])
    assert alert.bracket_ticks(Side.BUY) == [(1, 8, 80)] and alert.trail_ticks(Side.BUY) == 8
