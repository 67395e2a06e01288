"""Evaluation plots as PNG bytes (matplotlib, Agg): reward against KL, training curves, lengths,
reward against a cost budget, and a steering trade-off sweep.

Example: ``png = reward_kl_plot({"dpo": (1.2, 0.1, 0.5, 0.05)}, [(0.19, 0.3, 0.1, 2)])``

Figures are built on ``matplotlib.figure.Figure`` with an Agg canvas, never through pyplot, so no
global backend or figure registry is touched and the functions are safe in servers and tests.
``png_data_uri`` and ``html_figure`` embed the bytes in a self-contained HTML report.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Mapping, Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullLocator

DPI = 100
KLPoint = tuple[float, float, float, float]
"""(kl, kl_stderr, reward, reward_stderr) of one policy."""
BestOfN = tuple[float, float, float, int]
"""(kl_bound, reward, reward_stderr, n) of best-of-n."""


def reward_kl_plot(points: Mapping[str, KLPoint], best_of_n: Sequence[BestOfN] = ()) -> bytes:
    """True reward against KL to the base for each method (error bars: ± 1 standard error), with
    the best-of-N curve at its analytic KL bound log N − (N − 1)/N as the frontier to compare with.

    When the methods spend far more KL than best-of-N (often so) the x axis is symlog, linear
    below 1 nat, so the frontier stays legible next to them; the axis label says so.
    """
    fig = _figure(9.0, 5.2)
    ax = fig.add_subplot()
    frontier = sorted((_num(k), _num(r), _num(se), n) for k, r, se, n in best_of_n)
    if frontier:
        kls, rewards, ses, ns = zip(*frontier, strict=True)
        ax.errorbar(kls, rewards, yerr=ses, color="0.35", linestyle="--", marker="o", markersize=4,
                    capsize=3, label="best-of-N (true reward; KL bound)", zorder=2)
        for kl, reward, n in zip(kls, rewards, ns, strict=True):
            ax.annotate(f"N={n}", (kl, reward), textcoords="offset points", xytext=(6, -12),
                        fontsize=8, color="0.3")
    colors = _colors(len(points))
    for (name, (kl, kl_se, reward, reward_se)), color in zip(points.items(), colors, strict=True):
        ax.errorbar([_num(kl)], [_num(reward)], xerr=[_num(kl_se, 0.0)],
                    yerr=[_num(reward_se, 0.0)], color=color, marker="s", markersize=7, capsize=4,
                    linestyle="none", label=name, zorder=3)
    method_kls = [_num(p[0]) for p in points.values() if math.isfinite(_num(p[0]))]
    bound_kls = [k for k, *_ in frontier if math.isfinite(k)]
    symlog = bool(method_kls) and max(method_kls) > 4 * max(bound_kls + [1.0])
    if symlog:  # log ticks read as 10^0, 10^1: plain numbers at 1-2-5 steps are easier
        ax.set_xscale("symlog", linthresh=1.0)
        top = max(method_kls)
        ticks = [t for t in (0, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000) if t <= top * 1.5]
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
        ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("KL(policy ‖ base) per response (nats" + (", symlog scale)" if symlog else ")"))
    ax.set_ylabel("true reward per response (mean ± s.e.)")
    ax.set_title("True reward gained per unit of KL")
    ax.grid(True, alpha=0.3)
    if points or frontier:
        ax.legend(loc="best", fontsize=9)
    else:
        _empty(ax, "no policies to plot")
    return _png(fig)


def training_curves_plot(curves: Mapping[str, Sequence[tuple[float, float]]]) -> bytes:
    """Training loss against optimizer step, one small panel per run (losses differ in scale)."""
    n = max(len(curves), 1)
    ncols = n if n <= 3 else (2 if n == 4 else 3)
    nrows = math.ceil(n / ncols)
    fig = _figure(9.0, 1.0 + 2.6 * nrows)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, (name, points), color in zip(axes, curves.items(), _colors(len(curves)), strict=False):
        if points:
            steps, losses = zip(*points, strict=True)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 5, 10]))
            ax.plot(steps, losses, color=color, marker="." if len(points) < 30 else None)
        else:
            _empty(ax, "no logged steps")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("training loss")
        ax.grid(True, alpha=0.3)
    for ax in axes[len(curves):]:
        ax.set_visible(False)
    if not curves:
        axes[0].set_visible(True)
        _empty(axes[0], "no training curves")
    fig.suptitle("Training loss (each panel on its own scale)")
    return _png(fig)


def length_histogram(lengths: Mapping[str, Sequence[int]]) -> bytes:
    """Distribution of response lengths per policy: outlined histograms on shared integer bins."""
    fig = _figure(9.0, 4.2)
    ax = fig.add_subplot()
    longest = max((max(v) for v in lengths.values() if v), default=0)
    bins = [b - 0.5 for b in range(longest + 2)]
    for (name, values), color in zip(lengths.items(), _colors(len(lengths)), strict=True):
        if not values:
            continue
        mean = sum(values) / len(values)
        ax.hist(values, bins=bins, weights=[1 / len(values)] * len(values), histtype="step",
                linewidth=1.8, color=color, label=f"{name} (mean {mean:.1f})")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 5, 10]))
    ax.set_xlabel("response length (words)")
    ax.set_ylabel("share of responses")
    ax.set_title("Response length distribution")
    ax.grid(True, alpha=0.3)
    if any(lengths.values()):
        ax.legend(fontsize=9)
    else:
        _empty(ax, "no lengths recorded")
    return _png(fig)


CostPoint = tuple[float, float, float, str]
"""(cost, reward, reward_stderr, label) of one run of a decoding method."""


def reward_cost_plot(curves: Mapping[str, Sequence[CostPoint]], cost_label: str) -> bytes:
    """Reward against what was spent for it (log x axis), one line per method, each point
    labelled (error bars: ± 1 standard error): methods compared at matched cost."""
    fig = _figure(9.0, 5.0)
    ax = fig.add_subplot()
    for (name, points), color in zip(curves.items(), _colors(len(curves)), strict=True):
        if not points:
            continue
        costs, rewards, ses, labels = zip(*sorted(points), strict=True)
        ax.errorbar(costs, rewards, yerr=ses, color=color, marker="o", markersize=4, capsize=3, label=name)
        for cost, reward, label in zip(costs, rewards, labels, strict=True):
            ax.annotate(label, (cost, reward), textcoords="offset points", xytext=(5, -11), fontsize=7, color=color)
    if any(curves.values()):
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
        ax.legend(loc="best", fontsize=9)
    else:
        _empty(ax, "nothing to plot")
    ax.set_xlabel(cost_label + " (log scale)")
    ax.set_ylabel("true reward per response (mean ± s.e.)")
    ax.grid(True, alpha=0.3)
    return _png(fig)


SweepPoint = tuple[float, float, float]
"""(x, value, stderr) of one point of a sweep."""


def sweep_plot(series: Mapping[str, tuple[Sequence[SweepPoint], Sequence[tuple[float, float]]]],
               x_label: str, y_label: str) -> bytes:
    """Measured points (± 1 standard error) and a fitted curve per series, against one swept
    setting: ``series[name] = (points, fitted (x, y) pairs)``."""
    fig = _figure(9.0, 4.6)
    ax = fig.add_subplot()
    for (name, (points, fitted)), color in zip(series.items(), _colors(len(series)), strict=True):
        if points:
            xs, ys, ses = zip(*points, strict=True)
            ax.errorbar(xs, ys, yerr=ses, color=color, marker="o", markersize=4, capsize=3, linestyle="none",
                        label=f"{name} (measured)")
        if fitted:
            xs, ys = zip(*fitted, strict=True)
            ax.plot(xs, ys, color=color, linestyle="--", label=f"{name} (fit)")
    if series:
        ax.legend(loc="best", fontsize=9)
    else:
        _empty(ax, "nothing to plot")
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    ax.grid(True, alpha=0.3)
    return _png(fig)


CurvePoint = tuple[float, float, float, float, str]
"""(kl, kl_stderr, reward, reward_stderr, label) of one checkpoint of a training run."""


def reward_kl_curves_plot(curves: Mapping[str, Sequence[CurvePoint]], best_of_n: Sequence[BestOfN] = (),
                          points: Mapping[str, KLPoint] | None = None, budgets: Sequence[float] = ()) -> bytes:
    """True reward against KL to the base along each training run (one line per run through its
    checkpoints, each labelled, error bars ± 1 standard error), beside single policies
    (``points``), the best-of-N frontier at its KL bound, and vertical lines at KL ``budgets``
    where the runs are compared. The x axis is symlog (linear below 1 nat) when the runs spend far
    more KL than best-of-N, as in :func:`reward_kl_plot`."""
    fig = _figure(9.0, 5.4)
    ax = fig.add_subplot()
    frontier = sorted((_num(k), _num(r), _num(se), n) for k, r, se, n in best_of_n)
    if frontier:
        kls, rewards, ses, _ = zip(*frontier, strict=True)
        ax.errorbar(kls, rewards, yerr=ses, color="0.35", linestyle="--", marker="o", markersize=4,
                    capsize=3, label="best-of-N (true reward; KL bound)", zorder=2)
    points = dict(points or {})
    colors = _colors(len(curves) + len(points))
    for (name, run), color in zip(curves.items(), colors, strict=False):
        if not run:
            continue
        kls, kl_ses, rewards, ses, labels = zip(*run, strict=True)
        ax.errorbar([_num(k) for k in kls], [_num(r) for r in rewards], xerr=[_num(e, 0.0) for e in kl_ses],
                    yerr=[_num(e, 0.0) for e in ses], color=color, marker="o", markersize=4, capsize=3,
                    label=name, zorder=3)
        for kl, reward, label in zip(kls, rewards, labels, strict=True):
            ax.annotate(label, (_num(kl), _num(reward)), textcoords="offset points", xytext=(5, 5), fontsize=7,
                        color=color)
    for (name, (kl, kl_se, reward, reward_se)), color in zip(points.items(), colors[len(curves):], strict=True):
        ax.errorbar([_num(kl)], [_num(reward)], xerr=[_num(kl_se, 0.0)], yerr=[_num(reward_se, 0.0)], color=color,
                    marker="s", markersize=7, capsize=4, linestyle="none", label=name, zorder=4)
    for budget in budgets:
        ax.axvline(_num(budget), color="0.6", linestyle=":", linewidth=1)
    all_kls = [_num(p[0]) for run in curves.values() for p in run] + [_num(p[0]) for p in points.values()]
    all_kls = [k for k in all_kls if math.isfinite(k)]
    bound_kls = [k for k, *_ in frontier if math.isfinite(k)]
    symlog = bool(all_kls) and max(all_kls) > 4 * max(bound_kls + [1.0])
    if symlog:
        ax.set_xscale("symlog", linthresh=1.0)
        ticks = [t for t in (0, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000) if t <= max(all_kls) * 1.5]
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
        ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("KL(policy ‖ base) per response (nats" + (", symlog scale)" if symlog else ")"))
    ax.set_ylabel("true reward per response (mean ± s.e.)")
    ax.set_title("True reward against KL along training")
    ax.grid(True, alpha=0.3)
    if any(curves.values()) or points or frontier:
        ax.legend(loc="best", fontsize=8)
    else:
        _empty(ax, "nothing to plot")
    return _png(fig)


def png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def html_figure(png: bytes, alt: str, caption: str = "") -> str:
    """A <figure> with the PNG inline, scaled down (never up) to the page width."""
    cap = f'<figcaption class="note">{html.escape(caption)}</figcaption>' if caption else ""
    return (f'<figure style="margin:1rem 0"><img src="{png_data_uri(png)}" '
            f'alt="{html.escape(alt)}" style="max-width:100%;height:auto">{cap}</figure>')


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="tight")
    FigureCanvasAgg(fig)  # the Agg backend for this figure only
    return fig


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _colors(n: int) -> list[str]:
    palette = [f"C{i}" for i in range(10)]
    return [palette[i % 10] for i in range(n)]


def _num(value: float | None, missing: float = math.nan) -> float:
    return missing if value is None else float(value)


def _empty(ax, message: str) -> None:
    ax.text(0.5, 0.5, message, transform=ax.transAxes, ha="center", va="center", color="0.4")
