"""Open a local HTML file in Debian's chromium (through Playwright) and say what happened.

For offline pages such as `kubetune report`'s: every request that is not file:// is
blocked and recorded (the page must need none), and each `data-plot` section is
checked for a drawn plotly graph. Headless, and with --no-sandbox because the tests
run as root, where chromium's sandbox refuses to start.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from playwright.sync_api import ConsoleMessage, Page, Request, Route, ViewportSize, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
VIEWPORT: ViewportSize = {"width": 1280, "height": 900}

# For each [data-plot] section: its key, whether it holds a plot, and whether every
# plotly graph in it drew an SVG of non-zero size (an empty div means plotly.js failed).
SECTIONS_JS = """
() => Array.from(document.querySelectorAll('[data-plot]')).map((s) => {
  const graphs = Array.from(s.querySelectorAll('.plotly-graph-div'));
  const drawn = graphs.filter((g) => {
    const svg = g.querySelector('.main-svg');
    if (!svg) return false;
    const box = svg.getBoundingClientRect();
    return box.width > 0 && box.height > 0;
  });
  return {
    key: s.dataset.plot,
    id: s.id,
    state: s.dataset.state || '',
    graphs: graphs.length,
    drawn: drawn.length,
    text: s.innerText.slice(0, 500),
  };
})
"""


@dataclass(frozen=True)
class PlotSection:
    key: str  # data-plot
    id: str
    state: str  # data-state: "plot" or "note"
    graphs: int  # plotly graph divs in the section
    drawn: int  # of those, how many drew a visible SVG
    text: str  # the section's visible text (its heading, any note), for messages

    @property
    def rendered(self) -> bool:
        return self.graphs > 0 and self.drawn == self.graphs


@dataclass
class PageReport:
    path: Path
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)  # uncaught exceptions
    blocked_requests: list[str] = field(default_factory=list)  # anything not file://
    failed_requests: list[str] = field(default_factory=list)  # file:// that did not load
    sections: list[PlotSection] = field(default_factory=list)
    title: str = ""
    _screenshot: bytes = b""

    @property
    def network_requests(self) -> list[str]:
        """Requests that left the file system, or that failed: an offline page has none."""
        return self.blocked_requests + self.failed_requests

    def screenshot(self, path: str | Path) -> Path:
        """The full page as a PNG (taken when the page was opened)."""
        out = Path(path)
        out.write_bytes(self._screenshot)
        return out


def available() -> bool:
    return CHROMIUM.exists()


def open_page(path: str | Path, *, settle_ms: int = 500) -> PageReport:
    """Load `path`, wait until it is idle, and report errors, requests and plots."""
    target = Path(path).resolve()
    report = PageReport(path=target)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"]
        )
        try:
            page = browser.new_page(viewport=VIEWPORT)
            _watch(page, report)
            page.goto(target.as_uri(), wait_until="load")
            page.wait_for_load_state("networkidle")
            page.wait_for_timeout(settle_ms)  # plotly draws after load (responsive resize)
            report.title = page.title()
            report.sections = [PlotSection(**s) for s in page.evaluate(SECTIONS_JS)]
            report._screenshot = page.screenshot(full_page=True)
        finally:
            browser.close()
    return report


def _watch(page: Page, report: PageReport) -> None:
    def on_console(msg: ConsoleMessage) -> None:
        if msg.type == "error":
            report.console_errors.append(msg.text)

    def on_route(route: Route) -> None:
        url = route.request.url
        if url.startswith("file://"):
            route.continue_()
        else:  # the page wanted the network: record it, and give it nothing
            report.blocked_requests.append(url)
            route.abort()

    def on_failed(request: Request) -> None:
        if request.url not in report.blocked_requests:  # those are recorded already
            report.failed_requests.append(f"{request.url}: {request.failure}")

    page.on("console", on_console)
    page.on("pageerror", lambda error: report.page_errors.append(str(error)))
    page.on("requestfailed", on_failed)
    page.route("**/*", on_route)
