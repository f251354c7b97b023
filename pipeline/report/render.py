"""The report page: one HTML file with its styles, script and charts inline.

Charts are pygal's SVG, written into the page as they are: they draw without
any script, so the page needs nothing from the network. pygal's own tooltip
script lives on a CDN and is left out (``js=[]``); the few lines of script at
the end of the page give each bar a native tooltip instead. Every text from the
dataset (titles, sources, ids, errors, raw bytes) is HTML-escaped, and a link is
made only of an ``http(s)`` URL: titles and raw input are untrusted.
"""

import base64
import hashlib
from datetime import datetime
from html import escape
from typing import Dict, List, Optional
from urllib.parse import urlsplit

import pygal
from pygal.style import Style

from pipeline.report.gather import (DeadLetterExample, Member, Report, Run,
                                    Story, TimeSeries)
from schemas.dead_letter import REASONS

EVIDENCE_SHOWN = 10

# Okabe-Ito's colour-blind-safe palette, then a few more.
CHART_STYLE = Style(
    background="#ffffff", plot_background="#ffffff", foreground="#333333",
    foreground_strong="#111111", foreground_subtle="#999999", opacity=".9",
    opacity_hover="1", transition="0ms",
    font_family="system-ui, -apple-system, 'Segoe UI', 'DejaVu Sans', sans-serif",
    label_font_size=12, major_label_font_size=12, legend_font_size=13, value_font_size=12,
    tooltip_font_size=12, title_font_size=15,
    colors=("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442",
            "#000000", "#999999", "#8C564B"))



def _unused_parts_dropped(svg):
    """pygal's chart without the <script> of its config (for its tooltip script, which
    is not used) and its "Pygal" <title> (every chart's tooltip otherwise)."""
    for parent in list(svg.iter()):
        for child in list(parent):
            if child.tag == "script" or (parent is svg and child.tag == "title"):
                parent.remove(child)
    return svg


CHART_CONFIG = dict(style=CHART_STYLE, js=[], disable_xml_declaration=True, width=1000,
                    height=340, explicit_size=False, legend_at_bottom=True,
                    legend_at_bottom_columns=9, truncate_legend=-1, truncate_label=-1,
                    print_zeroes=False)

PAGE_STYLE = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", "DejaVu Sans", sans-serif;
       color: #222; margin: 0; background: #f4f5f7; }
main { max-width: 1100px; margin: 0 auto; padding: 24px; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 19px; margin: 0 0 12px; }
h3 { font-size: 16px; margin: 0 0 4px; }
section { background: #fff; border-radius: 8px; padding: 18px 20px; margin: 18px 0;
          box-shadow: 0 1px 3px rgba(0,0,0,.08); }
.subtitle, .meta, .note { color: #555; margin: 0 0 8px; }
.totals { display: flex; flex-wrap: wrap; gap: 12px; margin: 16px 0 0; padding: 0; }
.totals div { background: #fff; border-radius: 8px; padding: 10px 16px; min-width: 110px;
              box-shadow: 0 1px 3px rgba(0,0,0,.08); }
.totals dt { color: #555; font-size: 13px; }
.totals dd { margin: 0; font-size: 22px; font-weight: 600; }
.chart svg { width: 100%; height: auto; }
.empty { color: #777; font-style: italic; }
table { border-collapse: collapse; width: 100%; margin: 6px 0 10px; font-size: 14px; }
th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid #e3e5e8;
         vertical-align: top; }
th { color: #555; font-weight: 600; font-size: 13px; }
td.number, th.number { text-align: right; font-variant-numeric: tabular-nums; }
.story { border-top: 1px solid #e3e5e8; padding-top: 12px; margin-top: 12px; }
.badge { display: inline-block; background: #e8f0fb; color: #0b4a8b; border-radius: 10px;
         padding: 0 8px; margin-right: 3px; font-size: 13px; }
.kind { font-weight: 600; }
.kind-canonical { color: #555; } .kind-exact { color: #b45309; } .kind-near { color: #a16207; }
.kind-translation { color: #047857; } .kind-linked { color: #7c3aed; }
code { font-size: 12px; background: #f1f2f4; border-radius: 4px; padding: 0 4px; }
table.examples { table-layout: fixed; }
table.examples td { overflow-wrap: anywhere; }
.raw { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 12px;
       word-break: break-all; color: #444; }
"""

# Gives every pygal bar a native tooltip (series · label · value) from the values
# pygal writes beside it; text goes in through textContent, never parsed as HTML.
PAGE_SCRIPT = """
document.querySelectorAll("svg.pygal-chart").forEach(function (chart) {
  chart.querySelectorAll(".tooltip-trigger").forEach(function (mark) {
    var value = mark.parentNode.querySelector("desc.value");
    if (!value) { return; }
    var label = mark.parentNode.querySelector("desc.x_label");
    var series = /serie-(\\d+)/.exec(mark.closest(".series").getAttribute("class"));
    var legend = series && chart.querySelector("#activate-serie-" + series[1] + " text");
    var title = document.createElementNS("http://www.w3.org/2000/svg", "title");
    title.textContent = [legend && legend.textContent, label && label.textContent,
                         value.textContent].filter(Boolean).join(" \\u00b7 ");
    mark.appendChild(title);
  });
});
"""

# The page may load nothing and run no script but its own: whatever an escaping
# mistake let through would be refused by the browser (and logged as an error).
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; "
    "form-action 'none'; script-src 'sha256-"
    + base64.b64encode(hashlib.sha256(PAGE_SCRIPT.encode("utf-8")).digest()).decode("ascii")
    + "'")


def render_page(report: Report) -> str:
    """The whole page for ``report``, as one self-contained HTML document."""
    since = f" · rows of {report.since.isoformat()} and later" if report.since else ""
    dead_letters = sum(report.dead_letters_by_reason.values())
    duplicates = sum(n for kind, n in report.duplicates_by_kind.items() if kind != "linked")
    totals = [("articles", report.articles), ("stories", report.stories),
              ("duplicates", duplicates), ("languages", len(report.languages)),
              ("dead letters", dead_letters), ("runs", len(report.runs))]
    sections = [
        _section("articles", "Articles over time, by language",
                 _time_chart(report.articles_over_time, "articles")
                 or _empty("No articles.")),
        _section("stories", "Top stories across languages", _stories(report.top_stories)),
        _section("duplicates", "Duplicates by kind", _duplicates(report)),
        _section("topics", "Topics over time (each article's best topic)",
                 _time_chart(report.topics_over_time, "articles")
                 or _empty("No article has topics (none yet, or --embedder none).")),
        _section("dead-letters", "Dead letters by reason", _dead_letters(report)),
        _section("runs", "Runs", _runs(report.runs, report.unreadable_runs)),
    ]
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="{CONTENT_SECURITY_POLICY}">
<title>newsloom report: {escape(report.output)}</title>
<style>{PAGE_STYLE}</style>
</head>
<body>
<main>
<header>
<h1>newsloom report</h1>
<p class="subtitle">{escape(report.output)}{escape(since)} · made {_time(report.generated_at)}</p>
<dl class="totals">{"".join(f"<div><dt>{escape(name)}</dt><dd>{value:,}</dd></div>"
                            for name, value in totals)}</dl>
</header>
{"".join(sections)}
</main>
<script>{PAGE_SCRIPT}</script>
</body>
</html>
"""


def _section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{anchor}">\n<h2>{escape(title)}</h2>\n{body}\n</section>\n'


def _empty(text: str) -> str:
    return f'<p class="empty">{escape(text)}</p>'


def _time(moment: Optional[datetime]) -> str:
    return "" if moment is None else escape(moment.strftime("%Y-%m-%d %H:%M UTC"))


def _chart(chart: pygal.graph.graph.Graph) -> str:
    chart.add_xml_filter(_unused_parts_dropped)
    return f'<div class="chart">{chart.render(is_unicode=True)}</div>'


def count_ticks(maximum: int) -> List[int]:
    """Whole-number axis ticks from 0 to at least ``maximum``, at most 7 of them, a step
    of 1, 2 or 5 times a power of ten (counts have no fractions)."""
    step = next(mantissa * 10 ** exponent for exponent in range(19) for mantissa in (1, 2, 5)
                if maximum <= 6 * mantissa * 10 ** exponent)
    return list(range(0, maximum + step, step))


def bucket_label(start: datetime, unit: str) -> str:
    """How a time bucket is named on a chart's axis."""
    return start.strftime({"hour": "%m-%d %H:00", "day": "%Y-%m-%d", "week": "wk %Y-%m-%d",
                           "month": "%Y-%m"}[unit])


def _time_chart(series: TimeSeries, unit_name: str) -> str:
    """A stacked bar chart of ``series`` ("" when it holds nothing)."""
    if not series.buckets:
        return ""
    labels = [bucket_label(bucket, series.unit) for bucket in series.buckets]
    chart = pygal.StackedBar(**CHART_CONFIG, x_label_rotation=-35 if len(labels) > 8 else 0,
                             y_title=f"{unit_name} per {series.unit}",
                             show_minor_x_labels=False)
    chart.x_labels = labels
    # About 16 labels on the axis, whatever the number of bars.
    chart.x_labels_major = labels[::max(1, len(labels) // 16)]
    for name, counts in series.series.items():
        chart.add(name, counts)
    chart.y_labels = count_ticks(max(map(sum, zip(*series.series.values()))))
    return _chart(chart)


def _bar_chart(counts: Dict[str, int], title: str) -> str:
    """Horizontal bars, the first of ``counts`` at the top."""
    chart = pygal.HorizontalBar(**{**CHART_CONFIG, "height": 70 + 38 * len(counts)},
                                show_legend=False, print_values=True, x_title=title)
    chart.x_labels = list(reversed(counts))    # pygal draws the first label at the bottom
    chart.add(title, list(reversed(counts.values())))
    chart.y_labels = count_ticks(max(counts.values()))
    return _chart(chart)


def _duplicates(report: Report) -> str:
    if not report.articles:
        return _empty("No articles.")
    counts = report.duplicates_by_kind
    notes = {"exact": "same normalised body", "near": "same-language wording (MinHash)",
             "translation": "aligned paragraphs in another language",
             "linked": "a different report of the same event (story link; no copy)"}
    rows = "".join(f'<tr><td class="kind kind-{escape(kind)}">{escape(kind)}</td>'
                   f'<td class="number">{n:,}</td><td>{escape(notes.get(kind, ""))}</td></tr>'
                   for kind, n in counts.items())
    chart = _bar_chart(counts, "articles") if any(counts.values()) else _empty(
        "No duplicates and no story links.")
    return (f'{chart}<table><thead><tr><th>kind</th><th class="number">articles</th>'
            f'<th>what matched</th></tr></thead><tbody>{rows}</tbody></table>')


def _stories(stories: List[Story]) -> str:
    if not stories:
        return _empty("No story has more than one article.")
    return ('<p class="note">Stories of more than one article, those in the most languages '
            'first, then the largest.</p>' + "".join(_story(story) for story in stories))


def _story(story: Story) -> str:
    headline = next((m.title for m in story.members if m.title), story.story_id)
    languages = "".join(f'<span class="badge">{escape(lang)}</span>'
                        for lang in story.languages)
    topics = f" · topics: {escape(', '.join(story.topics))}" if story.topics else ""
    more = len(story.members) < story.member_count
    rows = "".join(_member_row(member) for member in story.members)
    return f"""<div class="story">
<h3>{escape(headline)}</h3>
<p class="meta">{languages} {story.member_count:,} articles · first seen {_time(story.first_seen)}
 · last seen {_time(story.last_seen)}{topics} · story <code>{escape(story.story_id)}</code></p>
<table><thead><tr><th>title</th><th>lang</th><th>source</th><th>seen</th><th>kind</th>
<th>evidence</th></tr></thead><tbody>{rows}</tbody></table>
{f'<p class="note">and {story.member_count - len(story.members):,} more</p>' if more else ""}
</div>"""


def _safe_url(url: Optional[str]) -> Optional[str]:
    return url if url and urlsplit(url).scheme.lower() in ("http", "https") else None


def _member_row(member: Member) -> str:
    title = escape(member.title) if member.title else f"<code>{escape(member.article_id)}</code>"
    url = _safe_url(member.url)
    if url:
        title = f'<a href="{escape(url)}" rel="noopener noreferrer">{title}</a>'
    evidence = ""
    if member.related is not None:
        score = f"{member.score:.2f} " if member.score is not None else ""
        shown = "".join(f"<code>{escape(item)}</code> "
                        for item in member.evidence[:EVIDENCE_SHOWN])
        extra = len(member.evidence) - EVIDENCE_SHOWN
        evidence = (f"{score}with <code>{escape(member.related)}</code><br>{shown}"
                    + (f"+{extra:,} more" if extra > 0 else ""))
    return (f"<tr><td>{title}</td><td>{escape(member.lang)}</td>"
            f"<td>{escape(member.source or '')}</td><td>{_time(member.seen)}</td>"
            f'<td class="kind kind-{escape(member.kind)}">{escape(member.kind)}</td>'
            f"<td>{evidence}</td></tr>")


def _dead_letters(report: Report) -> str:
    if not report.dead_letters_by_reason:
        return _empty("No dead letters: every record read became an article.")
    parts = [_bar_chart(report.dead_letters_by_reason, "dead letters")]
    for reason, count in report.dead_letters_by_reason.items():
        examples = report.dead_letter_examples.get(reason, [])
        rows = "".join(_dead_letter_row(example) for example in examples)
        parts.append(
            f'<h3><code>{escape(reason)}</code> · {count:,}</h3>'
            f'<p class="meta">{escape(REASONS.get(reason, ""))}</p>'
            f'<table class="examples"><thead><tr><th>where</th><th>error</th><th>raw bytes</th>'
            f"</tr></thead>"
            f"<tbody>{rows}</tbody></table>")
    return "".join(parts)


def _dead_letter_row(example: DeadLetterExample) -> str:
    where = example.origin
    if example.origin_partition is not None:
        where += f" partition {example.origin_partition}"
    where += f" @ {example.origin_offset}"
    article = (f"<br>id <code>{escape(example.article_id)}</code>"
               if example.article_id is not None else "")
    return (f"<tr><td>{escape(where)}{article}<br>{_time(example.ingested_at)}</td>"
            f"<td>{escape(example.error)}</td>"
            f'<td><span class="raw">{escape(example.raw_preview)}</span><br>'
            f"{example.raw_size:,} bytes</td></tr>")


def _runs(runs: List[Run], unreadable: List[tuple]) -> str:
    parts = []
    if not runs:
        parts.append(_empty("No run summaries (a stream writes none)."))
    else:
        rates = {run.run_id: run.articles_per_second for run in runs}
        if len(runs) > 1 and any(rates.values()):
            chart = pygal.Bar(**CHART_CONFIG, show_legend=False, print_values=True,
                              y_title="articles read per second",
                              x_label_rotation=-35 if len(runs) > 4 else 0,
                              value_formatter=lambda rate: f"{rate:,.1f}")
            chart.x_labels = list(rates)
            chart.add("articles/s", [rate or 0 for rate in rates.values()])
            parts.append(_chart(chart))
        head = "".join(f'<th class="number">{escape(name)}</th>' for name in (
            "read", "written", "already present", "rejected", "duplicates", "stories",
            "seconds", "articles/s"))
        parts.append(f"<table><thead><tr><th>run</th><th>started</th>{head}</tr></thead>"
                     f"<tbody>{''.join(_run_row(run) for run in runs)}</tbody></table>")
    for name, why in unreadable:
        parts.append(f'<p class="note">Could not read <code>_runs/{escape(name)}</code>: '
                     f"{escape(why)}</p>")
    return "".join(parts)


def _run_row(run: Run) -> str:
    rate = run.articles_per_second
    numbers = [f"{n:,}" for n in (run.read, run.written, run.already_present, run.rejected,
                                  run.duplicates, run.stories)]
    numbers += [f"{run.seconds:,.1f}", f"{rate:,.1f}" if rate is not None else ""]
    cells = "".join(f'<td class="number">{value}</td>' for value in numbers)
    return (f"<tr><td><code>{escape(run.run_id)}</code></td><td>{_time(run.started_at)}</td>"
            f"{cells}</tr>")
