#!/usr/bin/env python
"""Browser check of the built book (``_build/html``).

Serves the site from a local ``http.server`` (in a thread, on a free port) and opens every
HTML page in headless Chromium (Debian's ``/usr/bin/chromium`` driven by the ``playwright``
Python package). For each page it checks that

1. MathJax has finished typesetting, no raw TeX is left in the visible text (outside
   ``<pre>``/``<code>``), every ``.math`` element was rendered (holds an ``mjx-container``)
   and MathJax reported no TeX error;
2. every ``<img>`` has loaded (``complete && naturalWidth > 0``);
3. every same-origin link resolves to an existing file (HTTP 200), and its ``#fragment``,
   if any, names an element id of the target page;
4. no request left localhost (external requests are recorded and aborted), no local
   resource failed to load (HTTP >= 400) and no uncaught JavaScript error occurred;
5. nothing overflows the main column horizontally at 1280 px: the page does not scroll
   sideways, and no table, figure, output or element of the article reaches past the
   article's right edge or needs a horizontal scroll bar of its own (code input, in
   ``.highlight`` blocks, may scroll);
6. every glued number is rendered: no ``{glue`` role is left in the visible text, no
   pasted glue element is empty, and none shows a tuple where a number with thousands
   separators was glued (myst_nb's ``literal_eval`` of an unquoted ``"1,920"``), and no
   ``{glue:text}`` shows raw Markdown marks (backticks, ``**``), which it does not render;
7. on the results, experiment and performance pages no code cell longer than
   ``MAX_VISIBLE_CODE_LINES`` lines is visible unfolded (fold it with ``hide-input``);
8. every interactive plotly figure has loaded plotly.js (from the site), drawn its plot,
   and shows a hover label when the pointer is moved onto one of its points.

It saves a full-page screenshot of every page. Usage::

    python scripts/check_site.py [_build/html] [--screenshots _build/screenshots]

Prints a summary and exits 1 listing every failure. ``check_site(html_dir)`` returns the
list of failures for use from tests.
"""
from __future__ import annotations

import argparse
import functools
import http.server
import re
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
]
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}
# rule 7: pages where long code must be folded, and how long is long
FOLD_CODE_PAGES = re.compile(r"(^|/)(results|performance|experiments|exp\d[^/]*)\.html$")
MAX_VISIBLE_CODE_LINES = 15
# rule 5: tolerance of the overflow check, in CSS pixels
OVERFLOW_SLACK_PX = 2
# folders of the built site that hold assets or sources, not pages
NON_PAGE_DIRS = {"_static", "_sources", "_images", "_downloads"}

# Raw TeX that MathJax should have consumed.
RAW_TEX_PATTERNS = [
    (re.compile(r"\$\$"), "$$"),
    (re.compile(r"\\\(|\\\)"), r"\( or \)"),
    (re.compile(r"\\\[|\\\]"), r"\[ or \]"),
    (re.compile(r"\\(begin|end)\{"), r"\begin{ / \end{"),
    (
        re.compile(
            r"\\(frac|dfrac|sum|prod|int|lim|sqrt|alpha|beta|gamma|delta|Delta|kappa|lambda|"
            r"sigma|theta|mathbb|mathrm|mathcal|mathbf|operatorname|left|right|cdot|times|"
            r"infty|lVert|rVert|langle|rangle|le|ge|leq|geq|in|to|partial|nabla|hat|bar|"
            r"tilde|text)(?![A-Za-z])"
        ),
        "TeX command",
    ),
    # $...$ holding TeX-looking content (^, _ or a backslash)
    (re.compile(r"\$[^\s$][^$\n]{0,200}?[\^_\\][^$\n]{0,200}?\$"), "$...$"),
]

JS_WAIT_MATHJAX = """
() => {
  const mj = window.MathJax;
  if (!mj) return true;                      // no MathJax on this page
  return !!(mj.startup && mj.startup.promise);
}
"""

JS_MATHJAX_DONE = """
async () => {
  const mj = window.MathJax;
  if (!mj || !mj.startup || !mj.startup.promise) return false;
  await mj.startup.promise;
  return true;
}
"""

JS_PAGE_FACTS = r"""
() => {
  // visible text outside code, scripts and rendered math
  const clone = document.body.cloneNode(true);
  clone.querySelectorAll(
    'pre, code, script, style, noscript, template, textarea, kbd, samp, mjx-container, .MathJax'
  ).forEach(e => e.remove());
  const text = clone.textContent;

  const math = Array.from(document.querySelectorAll('.math'));
  const unrendered = math
    .filter(e => !e.querySelector('mjx-container') && !e.closest('pre, code'))
    .map(e => e.textContent.trim().slice(0, 80));
  const texErrors = Array.from(document.querySelectorAll('mjx-merror, [data-mjx-error]'))
    .map(e => (e.getAttribute('data-mjx-error') || e.textContent || '').slice(0, 80));

  const images = Array.from(document.images).map(img => ({
    src: img.currentSrc || img.src || img.getAttribute('src') || '',
    ok: img.complete && img.naturalWidth > 0,
  }));

  const links = Array.from(document.querySelectorAll('a[href]')).map(a => ({
    raw: a.getAttribute('href'),
    href: a.href,
  }));
  const ids = Array.from(document.querySelectorAll('[id], a[name]'))
    .map(e => e.id || e.getAttribute('name'));
  return {text, mathCount: math.length, unrendered, texErrors, images, links, ids,
          hasMathJax: !!window.MathJax};
}
"""

JS_LAYOUT_FACTS = r"""
([slack]) => {
  const out = {overflow: [], glue: [], longCode: []};
  const vw = document.documentElement.clientWidth;
  if (document.documentElement.scrollWidth > vw + slack)
    out.overflow.push(`the page scrolls sideways: ${document.documentElement.scrollWidth} px > ${vw} px`);
  const art = document.querySelector('article.bd-article') || document.querySelector('main') || document.body;
  const right = art.getBoundingClientRect().right;
  const seen = new Set();
  const describe = e => {
    const cls = (e.className && e.className.baseVal === undefined ? e.className : '') || '';
    const txt = (e.textContent || '').trim().replace(/\s+/g, ' ').slice(0, 60);
    return `<${e.tagName.toLowerCase()}${cls ? ' class="' + String(cls).slice(0, 40) + '"' : ''}> "${txt}"`;
  };
  for (const e of art.querySelectorAll('*')) {
    if (e.closest('.highlight, mjx-container, .MathJax, script, style')) continue;
    const pl = e.closest('.plotly-graph-div');
    if (pl && pl !== e) continue;              // plotly's own layers: the figure div counts
    if (typeof e.checkVisibility === 'function' && !e.checkVisibility()) continue;
    const r = e.getBoundingClientRect();
    if (r.width === 0 || r.height === 0) continue;
    const cs = getComputedStyle(e);
    const scrolls = (cs.overflowX === 'auto' || cs.overflowX === 'scroll')
                    && e.scrollWidth > e.clientWidth + slack;
    let pastEdge = r.right > right + slack;
    if (pastEdge) {                         // only report the outermost offender
      let p = e.parentElement, parentPast = false;
      while (p && p !== art) {
        if (seen.has(p)) { parentPast = true; break; }
        p = p.parentElement;
      }
      if (!parentPast) { out.overflow.push(`${describe(e)} reaches ${Math.round(r.right - right)} px past the main column`); }
      seen.add(e);
    } else if (scrolls) {
      let p = e.parentElement, parentSeen = false;
      while (p && p !== art) { if (seen.has(p)) { parentSeen = true; break; } p = p.parentElement; }
      if (!parentSeen)
        out.overflow.push(`${describe(e)} needs a horizontal scroll bar (${e.scrollWidth} px in ${e.clientWidth} px)`);
      seen.add(e);                          // its contents are reported with it
    }
    if (out.overflow.length >= 8) break;
  }
  // rule 6: glue
  const clone = document.body.cloneNode(true);
  clone.querySelectorAll('pre, code, script, style').forEach(e => e.remove());
  const m = clone.textContent.match(/\{glue(:[a-z]+)?\}[^\s]*/g);
  if (m) out.glue.push(...m.slice(0, 5).map(x => `unrendered glue role ${x}`));
  document.querySelectorAll('.pasted-text, .pasted-inline, .pasted-block').forEach(e => {
    if (!e.textContent.trim() && !e.querySelector('img, svg, table')) out.glue.push('an empty pasted glue element');
    // myst_nb literal_evals glued text: a string such as "1,920" whose repr is not quoted turns into a tuple
    if (/^\(\s*-?[\d.]+(\s*,\s*-?[\d.]+)+\s*\)$/.test(e.textContent.trim()))
      out.glue.push(`a glued value rendered as a tuple: ${e.textContent.trim()} (glue the str itself, quoted repr)`);
    // {glue:text} pastes plain text: Markdown inside it (`code`, **bold**) shows its marks
    if (e.classList.contains('pasted-text') && /`|\*\*/.test(e.textContent))
      out.glue.push(`raw Markdown in glued text: ${e.textContent.trim().slice(0, 80)} (drop the marks, or glue:md)`);
  });
  // rule 7: visible code cells
  document.querySelectorAll('.cell_input, div.cell_input').forEach(e => {
    if (typeof e.checkVisibility === 'function' && !e.checkVisibility()) return;
    const pre = e.querySelector('pre');
    if (!pre) return;
    const n = pre.textContent.replace(/\s+$/, '').split('\n').length;
    out.longCode.push({n, first: pre.textContent.trim().split('\n')[0].slice(0, 60)});
  });
  return out;
}
"""

JS_PLOTLY_FACTS = r"""
() => {
  const divs = Array.from(document.querySelectorAll('.plotly-graph-div'));
  return {n: divs.length, hasPlotly: typeof window.Plotly !== 'undefined',
          drawn: divs.filter(d => d.querySelector('.main-svg')).length,
          points: document.querySelectorAll('.plotly-graph-div .scatterlayer .point').length};
}
"""

JS_IMAGES_SETTLED = """
() => Array.from(document.images).every(img => img.complete)
"""


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 (http.server's signature)
        pass


class _Server:
    """``http.server`` on 127.0.0.1 and a free port, serving ``root`` in a thread."""

    def __init__(self, root: Path):
        handler = functools.partial(_QuietHandler, directory=str(root))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.port = self.httpd.server_address[1]
        self.base = f"http://127.0.0.1:{self.port}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def _pages(root: Path) -> list[Path]:
    pages = []
    for p in sorted(root.rglob("*.html")):
        rel = p.relative_to(root)
        if rel.parts[0] in NON_PAGE_DIRS:
            continue
        pages.append(rel)
    return pages


def _redirect_target(html: str) -> str | None:
    m = re.search(
        r"<meta\s+http-equiv=[\"']refresh[\"']\s+content=[\"']\d+;\s*url=([^\"']+)[\"']",
        html,
        re.IGNORECASE,
    )
    return m.group(1) if m else None


def _raw_tex(text: str) -> list[str]:
    found = []
    for pattern, name in RAW_TEX_PATTERNS:
        for m in pattern.finditer(text):
            a, b = max(0, m.start() - 30), min(len(text), m.end() + 30)
            snippet = " ".join(text[a:b].split())
            found.append(f"{name} in '...{snippet}...'")
            if len(found) >= 5:
                return found
    return found


class _LinkChecker:
    """Resolves same-origin URLs against the local server, with a cache."""

    def __init__(self, base: str):
        self.base = base
        self.status: dict[str, int] = {}
        self.ids: dict[str, set[str]] = {}

    def fetch(self, url: str) -> int:
        if url not in self.status:
            try:
                with urllib.request.urlopen(url, timeout=10) as r:
                    self.status[url] = r.status
                    body = r.read()
                    if "html" in (r.headers.get("Content-Type") or ""):
                        html = body.decode("utf-8", "replace")
                        self.ids[url] = set(
                            re.findall(r"\b(?:id|name)=[\"']([^\"']+)[\"']", html)
                        )
            except urllib.error.HTTPError as e:
                self.status[url] = e.code
            except (urllib.error.URLError, OSError):
                self.status[url] = 0
        return self.status[url]


def _hover_check(page, name: str, timeout_ms: int) -> list[str]:
    """Move the pointer onto points of the first plotly figure (one in the middle of the
    list first: points on the corners of a ternary plot can sit under its axis lines); a
    hover label must appear for at least one of up to four points."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    points = page.locator(".plotly-graph-div").first.locator(".scatterlayer .point")
    n = points.count()
    for i in dict.fromkeys([n // 2, n // 3, (2 * n) // 3, 0]):
        point = points.nth(i)
        try:
            point.scroll_into_view_if_needed(timeout=timeout_ms)
            box = point.bounding_box()
            if box is None:
                continue
            page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
            page.wait_for_function(
                "() => Array.from(document.querySelectorAll('.hoverlayer .hovertext'))"
                ".some(e => e.textContent.trim().length > 0)", timeout=3_000)
            return []
        except PlaywrightTimeout:
            page.mouse.move(0, 0)
    return [f"{name}: no hover label when the pointer is on a plotly point"]


def check_site(
    html_dir: str | Path,
    screenshot_dir: str | Path | None = None,
    n_screenshots: int | None = None,
    timeout_ms: int = 30_000,
    log=print,
) -> list[str]:
    """Check the built site in ``html_dir``; return the list of failures (empty: passed)."""
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    root = Path(html_dir).resolve()
    if not root.is_dir():
        return [f"{root}: no such directory"]
    pages = _pages(root)
    if not pages:
        return [f"{root}: no HTML pages"]

    failures: list[str] = []
    if screenshot_dir is not None:
        screenshot_dir = Path(screenshot_dir)
        screenshot_dir.mkdir(parents=True, exist_ok=True)

    # pages to screenshot: the intro (or the first page), then pages with math or figures
    def _score(rel: Path) -> tuple:
        html = (root / rel).read_text("utf-8", "replace")
        is_intro = rel.stem in ("intro", "index") and _redirect_target(html) is None
        rich = ('class="math' in html) + ("<img" in html)
        return (not is_intro, -rich, str(rel))

    shoot = set()
    if screenshot_dir is not None and (n_screenshots is None or n_screenshots > 0):
        candidates = [
            p for p in pages
            if _redirect_target((root / p).read_text("utf-8", "replace")) is None
            and p.name not in ("search.html", "genindex.html")
        ]
        shoot = set(sorted(candidates, key=_score)[:n_screenshots])   # None: every page

    with _Server(root) as server, sync_playwright() as pw:
        links = _LinkChecker(server.base)
        browser = pw.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        external: list[str] = []

        def _route(route):
            host = urllib.parse.urlsplit(route.request.url).hostname or ""
            scheme = urllib.parse.urlsplit(route.request.url).scheme
            if scheme in ("data", "blob", "about") or host in LOCAL_HOSTS:
                route.continue_()
            else:
                external.append(route.request.url)
                route.abort()

        context.route("**/*", _route)

        t0 = time.time()
        for rel in pages:
            url = server.base + rel.as_posix()
            name = rel.as_posix()
            html = (root / rel).read_text("utf-8", "replace")
            target = _redirect_target(html)
            if target is not None:  # e.g. index.html -> book/intro.html
                dest = urllib.parse.urljoin(url, target).split("#")[0]
                if links.fetch(dest) != 200:
                    failures.append(f"{name}: redirect target {target} does not exist")
                continue

            page = context.new_page()
            page_failures: list[str] = []
            requests: list[str] = []
            page.on("request", lambda r: requests.append(r.url))
            page.on(
                "pageerror",
                lambda e: page_failures.append(f"{name}: JavaScript error: {e}"),
            )

            def _on_response(resp, _pf=page_failures, _name=name):
                u = urllib.parse.urlsplit(resp.url)
                if (u.hostname or "") in LOCAL_HOSTS and resp.status >= 400 \
                        and not u.path.endswith("/favicon.ico"):
                    _pf.append(f"{_name}: local resource {u.path} answered HTTP {resp.status}")

            page.on("response", _on_response)
            n_external_before = len(external)
            try:
                page.goto(url, wait_until="load", timeout=timeout_ms)
                # (i) MathJax: wait until it has started, then until it has typeset
                try:
                    page.wait_for_function(JS_WAIT_MATHJAX, timeout=timeout_ms)
                    page.evaluate(JS_MATHJAX_DONE)
                except PlaywrightTimeout:
                    page_failures.append(f"{name}: MathJax did not start within {timeout_ms} ms")
                # lazy images: load them all, then wait for them to settle
                page.evaluate(
                    "() => document.querySelectorAll('img[loading=lazy]')"
                    ".forEach(i => i.loading = 'eager')"
                )
                try:
                    page.wait_for_function(JS_IMAGES_SETTLED, timeout=timeout_ms)
                except PlaywrightTimeout:
                    pass  # reported below as not loaded
                facts = page.evaluate(JS_PAGE_FACTS)
            except PlaywrightError as e:
                failures.append(f"{name}: could not be loaded in the browser: {e}")
                page.close()
                continue

            for hit in _raw_tex(facts["text"]):
                page_failures.append(f"{name}: raw TeX in the visible text: {hit}")
            for tex in facts["unrendered"]:
                page_failures.append(f"{name}: .math element not rendered by MathJax: {tex!r}")
            for err in facts["texErrors"]:
                page_failures.append(f"{name}: MathJax TeX error: {err!r}")
            if facts["mathCount"] and not facts["hasMathJax"]:
                page_failures.append(f"{name}: page has math but loads no MathJax")

            # (ii) images
            for img in facts["images"]:
                if not img["ok"]:
                    page_failures.append(f"{name}: image did not load: {img['src']}")

            # (iii) internal links
            page_ids = set(facts["ids"])
            for link in facts["links"]:
                href = link["href"]
                parts = urllib.parse.urlsplit(href)
                if parts.scheme not in ("http", "https"):
                    continue  # mailto:, javascript:, ...
                if (parts.hostname or "") not in LOCAL_HOSTS:
                    continue  # plain external hyperlink: allowed, not followed
                raw = link["raw"] or ""
                doc = urllib.parse.urlunsplit(parts._replace(fragment=""))
                frag = urllib.parse.unquote(parts.fragment)
                if raw.startswith("#"):
                    if frag and frag not in page_ids:
                        page_failures.append(f"{name}: link {raw} names no element on the page")
                    continue
                status = links.fetch(doc)
                if status != 200:
                    page_failures.append(
                        f"{name}: broken internal link {raw} (HTTP {status or 'error'})"
                    )
                elif frag and doc in links.ids and frag not in links.ids[doc]:
                    page_failures.append(f"{name}: link {raw}: no element with id {frag!r}")

            # (v)-(vii) layout, glue and folded code
            layout = page.evaluate(JS_LAYOUT_FACTS, [OVERFLOW_SLACK_PX])
            for o in layout["overflow"]:
                page_failures.append(f"{name}: horizontal overflow at 1280 px: {o}")
            for g in layout["glue"]:
                page_failures.append(f"{name}: {g}")
            if FOLD_CODE_PAGES.search(name):
                for c in layout["longCode"]:
                    if c["n"] > MAX_VISIBLE_CODE_LINES:
                        page_failures.append(
                            f"{name}: a code cell of {c['n']} lines (> {MAX_VISIBLE_CODE_LINES}) is "
                            f"visible unfolded: {c['first']!r}")

            # (viii) interactive plotly figures: loaded, drawn, and answering the pointer
            pf = page.evaluate(JS_PLOTLY_FACTS)
            if pf["n"]:
                if not pf["hasPlotly"]:
                    page_failures.append(f"{name}: plotly figure but plotly.js did not load")
                elif pf["drawn"] < pf["n"] or not pf["points"]:
                    page_failures.append(f"{name}: {pf['n']} plotly figure(s), {pf['drawn']} drawn, "
                                         f"{pf['points']} points")
                else:
                    page_failures.extend(_hover_check(page, name, timeout_ms))

            # (iv) external requests
            for ext in external[n_external_before:]:
                page_failures.append(f"{name}: request to an external host: {ext}")

            if rel in shoot:
                out = screenshot_dir / (name.replace("/", "_").removesuffix(".html") + ".png")
                page.screenshot(path=str(out), full_page=True)
                log(f"screenshot {out}")
            page.close()
            log(
                f"{'FAIL' if page_failures else 'ok  '} {name}: {facts['mathCount']} math, "
                f"{len(facts['images'])} img, {len(facts['links'])} links, "
                f"{len(requests)} requests"
            )
            failures.extend(page_failures)

        context.close()
        browser.close()
    log(f"checked {len(pages)} pages in {time.time() - t0:.1f} s")
    return failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("html_dir", nargs="?", default="_build/html")
    parser.add_argument(
        "--screenshots",
        default=None,
        help="folder for the screenshots (default: <html_dir>/../screenshots)",
    )
    parser.add_argument("-n", "--n-screenshots", type=int, default=None,
                        help="screenshot only this many pages (default: every page)")
    args = parser.parse_args(argv)
    html_dir = Path(args.html_dir)
    shots = Path(args.screenshots) if args.screenshots else html_dir.resolve().parent / "screenshots"
    failures = check_site(html_dir, screenshot_dir=shots, n_screenshots=args.n_screenshots)
    if failures:
        print(f"\n{len(failures)} failure(s):")
        for f in failures:
            print(f"  - {f}")
        return 1
    print("site check passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
