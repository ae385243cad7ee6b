"""Readers for rendered charts, independent of the code that drew them: PIL for PNG, xml.etree for SVG,
the plotly figure JSON embedded in an HTML page."""

from __future__ import annotations

import io
import json
import re
import xml.etree.ElementTree as ET
from typing import Any

import numpy as np
from PIL import Image

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SVG = "{http://www.w3.org/2000/svg}"


def png_image(content: bytes) -> Image.Image:
    assert content.startswith(PNG_SIGNATURE), "not a PNG"
    image = Image.open(io.BytesIO(content))
    image.load()
    return image


def assert_not_blank(image: Image.Image) -> None:
    pixels = np.asarray(image.convert("RGB"), dtype=float)
    assert pixels.std() > 10, "the image is (nearly) one colour"
    distinct = len(np.unique(pixels.reshape(-1, 3), axis=0))
    assert distinct > 20, f"only {distinct} colours: nothing much drawn"
    # Something dark (text, axes) and something coloured (data) are both there.
    assert (pixels.max(axis=2) < 80).sum() > 100
    assert (pixels.max(axis=2) - pixels.min(axis=2) > 60).sum() > 100


def svg_root(content: bytes) -> ET.Element:
    root = ET.fromstring(content)
    assert root.tag == SVG + "svg", root.tag
    return root


def plotly_figure(html: bytes) -> dict[str, Any]:
    """The traces and layout passed to Plotly.newPlot in a page written by plotly's to_html."""
    text = html.decode("utf-8")
    calls = list(re.finditer(r'Plotly\.newPlot\(\s*"[^"]+",\s*', text))
    assert calls, "no Plotly.newPlot call in the page"
    decoder = json.JSONDecoder()
    traces, end = decoder.raw_decode(text, calls[-1].end())
    layout_start = re.compile(r"\s*,\s*").match(text, end)
    assert layout_start is not None
    layout, _ = decoder.raw_decode(text, layout_start.end())
    return {"data": traces, "layout": layout}


def svg_bar_heights(content: bytes, series: int = 0) -> tuple[list[float], list[float]]:
    """(heights, bottoms) of the bars of one series, read from the path geometry in the SVG."""
    root = svg_root(content)
    heights, bottoms = [], []
    index = 0
    while True:
        group = root.find(f".//{SVG}g[@id='bar-{series}-{index}']")
        if group is None:
            break
        path = group.find(f"{SVG}path")
        assert path is not None
        numbers = [float(n) for n in re.findall(r"-?\d+(?:\.\d+)?", path.attrib["d"])]
        ys = numbers[1::2]
        heights.append(max(ys) - min(ys))
        bottoms.append(max(ys))  # SVG y grows downwards: the bar's base is its largest y
        index += 1
    return heights, bottoms
