"""The dashboard's charts: server-rendered SVG from pygal, readable without colour (each series
has its own fill pattern, values are printed on the bars, legends name the series) and without
JavaScript (pygal's script is taken out: the page's CSP would refuse it anyway). A value is
printed only on a bar big enough to hold it. Every bar links to the items behind it.

Rendering costs about 10 ms a chart, so a chart is kept by the hash of what it shows: the
same figures draw the same SVG, and a changed figure draws anew.
"""
from __future__ import annotations

import hashlib
import json
import sys
from collections import OrderedDict
from threading import Lock

import pygal
from pygal.style import Style

# pygal appends an import hook for its map plugins (unused here) that has no find_spec: every
# import that later misses all other finders then warns (an error under the test suite's
# warning filter). Take it out again.
sys.meta_path[:] = [f for f in sys.meta_path if type(f).__name__ != "PluginImportFixer"]

# Series fills: a colour and a pattern each, so two series differ in print and to colour-blind
# readers too (solid, diagonal hatch, dots, cross-hatch, horizontal lines).
PATTERNS = (
    ('<pattern id="cd-fill-0" width="8" height="8" patternUnits="userSpaceOnUse">'
     '<rect width="8" height="8" fill="#1f6feb"/></pattern>'),
    ('<pattern id="cd-fill-1" width="8" height="8" patternUnits="userSpaceOnUse" '
     'patternTransform="rotate(45)"><rect width="8" height="8" fill="#f59e0b"/>'
     '<line x1="0" y1="0" x2="0" y2="8" stroke="#7c2d12" stroke-width="3"/></pattern>'),
    ('<pattern id="cd-fill-2" width="8" height="8" patternUnits="userSpaceOnUse">'
     '<rect width="8" height="8" fill="#10b981"/><circle cx="4" cy="4" r="2" fill="#064e3b"/>'
     '</pattern>'),
    ('<pattern id="cd-fill-3" width="8" height="8" patternUnits="userSpaceOnUse">'
     '<rect width="8" height="8" fill="#e11d48"/><path d="M0 0L8 8M8 0L0 8" stroke="#4c0519" '
     'stroke-width="1.5"/></pattern>'),
    ('<pattern id="cd-fill-4" width="8" height="8" patternUnits="userSpaceOnUse">'
     '<rect width="8" height="8" fill="#8b5cf6"/><line x1="0" y1="4" x2="8" y2="4" '
     'stroke="#2e1065" stroke-width="2"/></pattern>'),
)
STYLE = Style(
    background="transparent",
    plot_background="transparent",
    foreground="#1f2937",
    foreground_strong="#111827",
    foreground_subtle="#6b7280",
    font_family="system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif",
    colors=tuple(f"url(#cd-fill-{i})" for i in range(len(PATTERNS))),
    value_font_size=11,
    label_font_size=11,
    major_label_font_size=11,
    legend_font_size=12,
    title_font_size=14,
    opacity="1",
    opacity_hover="0.8",
    transition="0s",
)
CACHE_SIZE = 256
_cache: OrderedDict[str, str] = OrderedDict()
_lock = Lock()


def _without_scripts(root):
    for parent in list(root.iter()):
        for child in list(parent):
            if str(child.tag).endswith("script"):
                parent.remove(child)
    return root


def _classes(node) -> list[str]:
    return (node.get("class") or "").split()


def _serie_index(node) -> str | None:
    return next((c for c in _classes(node) if c.startswith("serie-")), None)


def _without_crowded_values(root):
    """No printed value on a bar too small to hold it (it would spill over its neighbours
    and read as theirs); the table under the chart has every value."""
    bars: dict[str, list] = {}
    values: dict[str, list] = {}
    overlays = [n for n in root.iter() if "text-overlay" in _classes(n)]
    for overlay in overlays:
        for group in overlay:
            serie = _serie_index(group)
            if serie:
                values.setdefault(serie, []).extend(
                    (group, t) for t in group if "value" in _classes(t))
    in_overlay = {id(n) for overlay in overlays for n in overlay.iter()}
    for node in root.iter():
        serie = _serie_index(node)
        if serie and id(node) not in in_overlay and "series" in _classes(node):
            bars.setdefault(serie, []).extend(
                r for r in node.iter() if str(r.tag).endswith("rect") and "rect" in _classes(r))
    size = STYLE.value_font_size
    for serie, texts in values.items():
        for rect, (group, text) in zip(bars.get(serie, []), texts):
            label = text.text or ""
            # A generous estimate of the text's width in the chart's own units.
            wide_enough = float(rect.get("width", 0)) >= len(label) * size * 0.62 + 4
            tall_enough = float(rect.get("height", 0)) >= size + 2
            if label and not (wide_enough and tall_enough):
                group.remove(text)
    return root


def _chart(kind: str, title: str, **options):
    settings = dict(print_values=True, print_zeroes=False, legend_at_bottom=True,
                    legend_box_size=14, width=640, height=320, margin=8, spacing=8,
                    truncate_legend=40, truncate_label=24)
    settings.update(options)
    chart = getattr(pygal, kind)(title=title, style=STYLE, defs=list(PATTERNS), js=[],
                                 disable_xml_declaration=True, **settings)
    chart.add_xml_filter(_without_scripts)
    chart.add_xml_filter(_without_crowded_values)
    return chart


def render_chart(spec: dict) -> str:
    """SVG for a chart spec: {kind, title, labels, series: [(name, [(value, href)])], options}.
    Kept by the spec's hash."""
    key = hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()
    with _lock:
        svg = _cache.get(key)
        if svg is not None:
            _cache.move_to_end(key)
            return svg
    chart = _chart(spec["kind"], spec["title"], **spec.get("options", {}))
    chart.x_labels = spec["labels"]
    for name, points in spec["series"]:
        chart.add(name, [
            {"value": value, "xlink": {"href": href, "target": "_top"}} if href else value
            for value, href in points])
    svg = chart.render(is_unicode=True)
    with _lock:
        _cache[key] = svg
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
    return svg
