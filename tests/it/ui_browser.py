"""Drives the web UI of a running `sluice run --ui` in Debian's headless Chromium (through
Debian's chromium-driver and selenium from PyPI), as tests/it/ui.rs asks, and checks what a
person would look at: the batches table fills, each chart draws its data, a plugin's own
counter shows with a count, a batch's page opens from its row, and the swap controls are
disabled without the token and show the server's 401 for a wrong one. With --token (the
pipeline's own) and --swap-file, it also swaps a plugin through the page and waits for the
swap to show in the swap history.

Saves a screenshot of the page (and one of the batch page beside it) and prints their paths.
Exits 0 when every check holds, else 1 with a message naming the check (a screenshot of the
page as it was is saved then too). Every wait is bounded by --timeout.

    python ui_browser.py --url http://127.0.0.1:PORT/ --screenshot DIR/ui.png \
        [--token T (or $SLUICE_UI_TOKEN) --swap-file grep-v2.wasm --plugin grep \
         --counter grep_kept_total]
"""

import argparse
import base64
import hashlib
import os
import re
import sys
import tempfile
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

CHARTS = ["chart-input-rate", "chart-scheduling-delay", "chart-processing-time", "chart-total-delay"]


class Failed(Exception):
    """A check that did not hold."""


def browser(args, profile):
    opts = webdriver.ChromeOptions()
    opts.binary_location = args.chromium
    for flag in [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", "--window-size=1280,900", f"--user-data-dir={profile}",
    ]:
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # Both binaries given: selenium-manager has nothing to look up or download.
    service = Service(executable_path=args.chromedriver, log_output=os.devnull)
    return webdriver.Chrome(service=service, options=opts)


def wait(what, timeout, check):
    """Calls `check` until it returns something true (returned) or `timeout` s pass."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            got = check()
            if got:
                return got
        except Exception as e:  # a stale element or a half-drawn page: look again
            last = e
        time.sleep(0.2)
    raise Failed(f"{what}: not within {timeout} s" + (f" (last error: {last})" if last else ""))


def by_id(d, id_):
    return d.find_element(By.ID, id_)


def texts(d, css):
    """The text of each element `css` selects, read at one instant (the page redraws every
    second, so elements found one call earlier may be gone)."""
    return d.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0])).map(e => e.textContent.trim())", css)


def check_tables_and_charts(d, args):
    links = "#batches-table tbody tr a.batch-link"
    wait("the batches table has at least 2 rows", args.timeout, lambda: len(texts(d, links)) >= 2)
    ids = [int(t) for t in texts(d, links)]
    if ids != sorted(ids, reverse=True):
        raise Failed(f"the batches table is not newest first: {ids[:10]}")
    print(f"batches table: {len(ids)} rows, newest {ids[0]}")

    def charts_drawn():
        drawn = {}
        for c in CHARTS:
            svg = by_id(d, c)
            points = int(svg.get_attribute("data-points") or "0")
            path = svg.find_element(By.CSS_SELECTOR, "path.series").get_attribute("d") or ""
            in_path = len(re.findall(r"[ML]", path))
            if points < 2 or in_path != points:
                return None
            drawn[c] = points
        return drawn

    drawn = wait("each chart has data-points >= 2 and a path of that many points", args.timeout, charts_drawn)
    print(f"charts: {drawn}")

    def counter():
        for text in texts(d, "#plugins-table li.metric"):
            m = re.fullmatch(re.escape(args.counter) + r" = ([0-9,]+)", text)
            if m and int(m.group(1).replace(",", "")) > 0:
                return text
        return None

    shown = wait(f"the plugins table shows {args.counter} = N with N > 0", args.timeout, counter)
    print(f"plugins table: {shown}")
    receivers = wait("the receivers table has a row per partition", args.timeout,
                     lambda: texts(d, "#receivers-table tbody tr:not(.empty)"))
    print(f"receivers table: {len(receivers)} rows")
    header = by_id(d, "ready").text
    if header != "ready":
        raise Failed(f"the header says {header!r}, not 'ready'")


def check_controls(d, args):
    swap = by_id(d, "swap-button")
    if swap.is_enabled():
        raise Failed("the swap button is enabled without a token")
    reason = by_id(d, "control-reason").text
    if "token" not in reason:
        raise Failed(f"the disabled controls do not say they need the token: {reason!r}")
    print(f"controls without a token: disabled ({reason[:60]}…)")
    by_id(d, "token").send_keys("not-the-token")
    by_id(d, "token-save").click()
    report = wait("the shadow report button is enabled with a token", args.timeout,
                  lambda: by_id(d, "shadow-report-button").is_enabled() and by_id(d, "shadow-report-button"))
    report.click()
    result = wait("the answer to a wrong token is shown", args.timeout,
                  lambda: by_id(d, "control-result").get_attribute("data-status"))
    text = by_id(d, "control-result").text
    if result != "401" or "401" not in text:
        raise Failed(f"a wrong token did not show the server's 401: status {result}, {text!r}")
    print("controls with a wrong token: the server's 401 is shown")
    if not args.token:
        return
    by_id(d, "token").clear()
    by_id(d, "token").send_keys(args.token)
    by_id(d, "token-save").click()
    d.execute_script("document.getElementById('control-result').removeAttribute('data-status')")
    by_id(d, "shadow-report-button").click()
    status = wait("the shadow report's answer", args.timeout,
                  lambda: by_id(d, "control-result").get_attribute("data-status"))
    if status != "404":
        raise Failed(f"the shadow report with the token answered {status}, not 404 (no shadow run): "
                     f"{by_id(d, 'control-result').text!r}")
    if not args.swap_file:
        return
    by_id(d, "control-file").send_keys(os.path.abspath(args.swap_file))
    if args.manifest_file:
        by_id(d, "control-manifest").send_keys(os.path.abspath(args.manifest_file))
    d.execute_script("document.getElementById('control-result').removeAttribute('data-status')")
    wait("the swap button is enabled with a token and a file", args.timeout,
         lambda: by_id(d, "swap-button").is_enabled())
    by_id(d, "swap-button").click()
    status = wait("the swap's answer", args.timeout,
                  lambda: by_id(d, "control-result").get_attribute("data-status"))
    text = by_id(d, "control-result").text
    if status != "200" or '"live"' not in text:
        raise Failed(f"the swap through the page answered {status}: {text!r}")
    print(f"swap through the page: {text.splitlines()[0]}")
    digest = hashlib.sha256(open(args.swap_file, "rb").read()).hexdigest()[:12]
    event = wait(f"the swap history shows the new version {digest}", args.timeout,
                 lambda: [t for t in texts(d, "#swaps-table tbody tr:not(.empty)")
                          if args.plugin in t and digest in t])
    print(f"swap history: {event[0]}")
    # Roll back from the page: the version live before comes back; the new one is left.
    d.execute_script("document.getElementById('control-result').removeAttribute('data-status')")
    by_id(d, "rollback-button").click()
    status = wait("the roll-back's answer", args.timeout,
                  lambda: by_id(d, "control-result").get_attribute("data-status"))
    text = by_id(d, "control-result").text
    if status != "200" or '"live"' not in text or digest not in text:
        raise Failed(f"the roll-back through the page answered {status}: {text!r}")
    print(f"roll-back through the page: {text.splitlines()[0]}")
    wait(f"the plugins table no longer shows {digest} once the roll-back is live", args.timeout,
         lambda: [t for t in texts(d, "#plugins-table tbody tr") if args.plugin in t and digest not in t])
    if args.manifest_file:
        version = wait("the plugins table shows the manifest's version", args.timeout,
                       lambda: [t for t in texts(d, "#plugins-table tbody tr td:nth-child(3)") if t != "0.0.0"])
        print(f"plugins table after the swap: version {version[0]}")


def check_batch_page(d, args):
    def click_a_row():
        # The table is redrawn every second: find the link afresh on each try.
        link = d.find_element(By.CSS_SELECTOR, "#batches-table tbody tr a.batch-link")
        batch = link.text
        d.execute_script("arguments[0].scrollIntoView({block: 'center'})", link)
        link.click()
        return batch

    batch = wait("a click on a batch's row", args.timeout, click_a_row)
    wait(f"the page of batch {batch} opens from its row", args.timeout,
         lambda: by_id(d, "batch-detail").get_attribute("data-batch") == batch
         and by_id(d, "view-batch").is_displayed() and not by_id(d, "view-main").is_displayed())
    parts = texts(d, "#batch-partitions tbody tr")
    plugins = texts(d, "#batch-plugins tbody tr")
    if not parts or not any(args.plugin in p for p in plugins):
        raise Failed(f"batch {batch}'s page lacks its partitions ({len(parts)}) or plugin {args.plugin} ({plugins})")
    if not d.current_url.endswith(f"#/batch/{batch}"):
        raise Failed(f"the batch page's address is {d.current_url}")
    print(f"batch page: batch {batch}, {len(parts)} partitions, plugins {plugins}")


def console_errors(d):
    """Errors the page logged (a script error, a refused Content-Security-Policy, …)."""
    return [e["message"] for e in d.get_log("browser") if e.get("level") == "SEVERE"]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--screenshot", required=True)
    p.add_argument("--timeout", type=float, default=30)
    p.add_argument("--plugin", default="grep")
    p.add_argument("--counter", default="grep_kept_total")
    p.add_argument("--token", default=os.environ.get("SLUICE_UI_TOKEN"),
                   help="the pipeline's admin token (default: $SLUICE_UI_TOKEN)")
    p.add_argument("--swap-file")
    p.add_argument("--manifest-file")
    p.add_argument("--chromium", default=os.environ.get("SLUICE_CHROMIUM", "/usr/bin/chromium"))
    p.add_argument("--chromedriver", default=os.environ.get("SLUICE_CHROMEDRIVER", "/usr/bin/chromedriver"))
    args = p.parse_args()
    shot = os.path.abspath(args.screenshot)
    os.makedirs(os.path.dirname(shot), exist_ok=True)
    stale = shot[:-4] + "-failed.png"
    if os.path.exists(stale):
        os.remove(stale)
    with tempfile.TemporaryDirectory(prefix="sluice-ui-profile-") as profile:
        d = browser(args, profile)
        try:
            d.set_page_load_timeout(args.timeout)
            d.get(args.url)
            check_tables_and_charts(d, args)
            d.save_screenshot(shot)
            print(f"screenshot: {shot}")
            check_controls(d, args)
            d.execute_script("window.scrollTo(0, 0)")
            full = d.execute_cdp_cmd("Page.captureScreenshot", {"captureBeyondViewport": True, "format": "png"})
            full_path = shot[:-4] + "-full.png" if shot.endswith(".png") else shot + "-full.png"
            with open(full_path, "wb") as f:
                f.write(base64.b64decode(full["data"]))
            print(f"screenshot of the whole page: {full_path}")
            check_batch_page(d, args)
            batch_shot = shot[:-4] + "-batch.png" if shot.endswith(".png") else shot + "-batch.png"
            d.save_screenshot(batch_shot)
            print(f"screenshot of the batch page: {batch_shot}")
            errors = [e for e in console_errors(d) if "/v1/plugins/" not in e]
            if errors:
                raise Failed(f"the page logged errors: {errors}")
        except Exception as e:  # a check that failed, or the browser
            failed = shot[:-4] + "-failed.png"
            try:
                d.save_screenshot(failed)
            except Exception:
                failed = "(none)"
            print(f"ui_browser: FAILED: {e} (screenshot of the page then: {failed})", file=sys.stderr)
            return 1
        finally:
            d.quit()
    print("ui_browser: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
