"""Small pieces of the self-contained HTML pages kit writes (report.html, runs/index.html, the drift
section of eda.html): escaping, matplotlib figures without pyplot, embedded PNGs and thumbnails.

Every image is a data: URI, so a page opens offline and can be mailed or attached as one file.
"""

from __future__ import annotations

import base64
import html
import io

from PIL import Image


def escape(value) -> str:
    return html.escape(str(value), quote=True)


def figure(width: float, height: float, layout: str | None = "constrained", **options):
    """A bare Figure on the Agg canvas: no pyplot, so a notebook's backend and state stay as they are.

    layout=None skips constrained layout, which measures every text artist again on each draw
    (half the time of a confusion matrix full of counts); place the axes with subplots_adjust.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    made = Figure(figsize=(width, height), layout=layout, **options)
    FigureCanvasAgg(made)
    return made


def integer_ticks():
    """A tick locator for counts and epochs: 1, 2, 3, never 1.2, 1.4."""
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(integer=True)


def png_data(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def figure_png(made, dpi: int = 96) -> bytes:
    buffer = io.BytesIO()
    made.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def img_tag(png: bytes, alt: str, css_class: str = "plot") -> str:
    return f'<img class="{css_class}" alt="{escape(alt)}" src="{png_data(png)}">'


def figure_tag(made, alt: str) -> str:
    """The figure as an embedded <img class="plot">."""
    return img_tag(figure_png(made), alt)


def thumbnail_png(path: str, size: int = 96) -> bytes | None:
    """A PNG thumbnail of the image file (small images scaled up, pixels kept sharp); None if
    the file cannot be read."""
    try:
        with Image.open(path) as image:
            return _thumbnail(image.convert("RGB"), size, upscale=True)
    except (OSError, ValueError):
        return None


def rgb_thumbnail_png(rgb, size: int = 96) -> bytes:
    """A PNG thumbnail of a decoded HxWx3 uint8 array."""
    return _thumbnail(Image.fromarray(rgb), size, upscale=False)


def _thumbnail(image, size: int, *, upscale: bool) -> bytes:
    image.thumbnail((size, size))
    if upscale and max(image.size) < size // 2:
        factor = max(1, size // max(image.size))
        image = image.resize((image.width * factor, image.height * factor), Image.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def thumbnail_tag(path: str, alt: str, size: int = 96) -> str:
    png = thumbnail_png(path, size)
    if png is None:
        return '<div class="broken">unreadable</div>'
    return img_tag(png, alt, "thumb")


def table(header: list[str], rows: list[tuple]) -> str:
    """An HTML table; cells are inserted as given (escape text cells first)."""
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{v}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222;
       padding: 0 1em; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ddd; margin-top: 2em; }
.meta { color: #555; margin-top: 0; }
table { border-collapse: collapse; margin: 0.6em 1.5em 0.6em 0; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f5f5f5; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.plot { max-width: 100%; }
.grid { display: flex; flex-wrap: wrap; gap: 8px; }
figure { margin: 0; width: 110px; font-size: 11px; }
figure img.thumb, .broken { width: 96px; height: 96px; object-fit: contain; background: #eee;
                            image-rendering: pixelated; display: block; }
.broken { line-height: 96px; color: #b00; text-align: center; }
.ok { color: #2a7a2a; } .bad { color: #b00; font-weight: 600; }
dl.header { display: grid; grid-template-columns: max-content auto; gap: 2px 12px; }
dl.header dt { color: #555; } dl.header dd { margin: 0; }
"""


def page(title: str, body: str) -> str:
    """A whole self-contained HTML document."""
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{escape(title)}</title><style>{CSS}</style></head>\n<body>\n"
        f"{body}\n</body></html>\n"
    )
