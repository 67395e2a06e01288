"""Show a data doctor report: a terminal view with rich, and a JSON form.

Example: ``render(check_data("pairs.jsonl"), Console())``
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from alignlab.eval.doctor import DoctorReport


def render(report: DoctorReport, console: Console) -> None:
    console.print(f"[bold]alignlab data check[/] {escape(report.source)}")
    if report.fatal is not None:
        console.print(f"[bold red]unreadable:[/] {escape(report.fatal)}")
        return
    load = report.load
    assert load is not None
    console.print(f"rows read: {load.rows}   records: {load.records}   "
                  f"formats: {', '.join(f'{k} ({v})' for k, v in load.formats.most_common()) or '-'}")
    for reason, count in sorted(load.dropped.items()):
        console.print(f"dropped by the format's rule: {escape(reason)}: {count}")
    if load.ignored_columns:
        console.print(f"ignored columns: {escape(', '.join(sorted(load.ignored_columns)))}")

    if report.lengths:
        table = Table(title=f"lengths ({report.length_unit})", title_justify="left")
        for column in ("field", "n", "min", "median", "mean", "p95", "max"):
            table.add_column(column, justify="left" if column == "field" else "right")
        for name, stats in report.lengths.items():
            table.add_row(name, *(f"{stats[k]:.0f}" for k in ("n", "min", "median", "mean", "p95", "max")))
        console.print(table)
    if report.length_bias:
        bias = report.length_bias
        console.print(f"length bias: chosen longer in {bias['chosen_longer']:.1%} of pairs "
                      f"(mean chosen − rejected: {bias['mean_difference']:+.1f} {report.length_unit})")

    table = Table(title="findings", title_justify="left")
    table.add_column("finding", no_wrap=True)
    table.add_column("count", justify="right")
    table.add_column("detail")
    for finding in report.findings:
        style = "yellow" if finding.count else "green"
        table.add_row(escape(finding.name), f"[{style}]{finding.count}[/]", escape(finding.detail))
    console.print(table)
    for finding in report.findings:
        if finding.count and finding.examples:
            console.print(f"[bold]{escape(finding.name)}[/], e.g.:")
            for example in finding.examples:
                console.print(f"  {escape(example)}", highlight=False)
    verdict = {0: "[green]clean[/]", 1: "[yellow]findings (exit 1)[/]"}[report.exit_code]
    if report.no_records:  # the one finding that makes every other count meaningless
        verdict = "[bold yellow]no records (exit 1)[/]"
    console.print(f"verdict: {verdict}")


def to_json(report: DoctorReport) -> dict[str, Any]:
    """Plain JSON data (``asdict`` alone would rebuild each Counter from its item pairs)."""
    data = asdict(report)
    if report.load is not None:
        load = report.load
        data["load"] = {**{k: v for k, v in data["load"].items()},
                        "formats": dict(load.formats), "dropped": dict(load.dropped),
                        "skipped": dict(load.skipped), "warnings": dict(load.warnings),
                        "ignored_columns": sorted(load.ignored_columns)}
    data["exit_code"] = report.exit_code
    return data
