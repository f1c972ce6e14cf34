"""The web dashboard (/ui) in a real browser: Debian's chromium, headless, driven by Playwright
(PyPI `playwright` in /opt/kapsel-venv, never `playwright install`: the system chromium is used).

    dashboard.py URL TOKEN KAPSEL KUBECONFIG WORKDIR ARTIFACT_DIR

Logs in with the token, applies a Deployment with the kapsel CLI while the page is open and
sees its pods appear, applies a new template and sees the rollout's progress change without a
reload, opens a pod's logs, checks that the data comes from watches (no polling), that the page
fits a phone's width, and saves screenshots into ARTIFACT_DIR. Prints `dashboard: ok` last.
"""

import os
import subprocess
import sys
import time

from playwright.sync_api import sync_playwright

URL, TOKEN, KAPSEL, KUBECONFIG, WORKDIR, ARTIFACTS = sys.argv[1:7]
CHROMIUM = os.environ.get("KAPSEL_CHROMIUM", "/usr/bin/chromium")
T = 120_000  # ms, generous: two cores shared with builds

DEPLOY = """apiVersion: apps/v1
kind: Deployment
metadata:
  name: dash
  namespace: default
spec:
  replicas: 3
  selector:
    matchLabels: {{app: dash}}
  strategy:
    type: RollingUpdate
    rollingUpdate: {{maxSurge: 1, maxUnavailable: 0}}
  template:
    metadata:
      labels: {{app: dash}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
        - name: app
          image: kapsel.local/demo-httpd:v1
          command: ["/bin/sh", "-c", "echo hello from dash {version}; while true; do sleep 1; done"]
          env:
            - {{name: VERSION, value: "{version}"}}
          readinessProbe:
            exec:
              command: ["/bin/true"]
            initialDelaySeconds: 1
            periodSeconds: 1
"""


def kapsel(*args, stdin=None):
    out = subprocess.run(
        [KAPSEL, "--kubeconfig", KUBECONFIG, *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=WORKDIR,
        timeout=120,
    )
    if out.returncode != 0:
        raise SystemExit(f"kapsel {args}: {out.returncode}\n{out.stdout}{out.stderr}")
    return out.stdout


def apply(version):
    kapsel("apply", "-f", "-", stdin=DEPLOY.format(version=version))


def step(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def dev_ui(page):
    """KAPSEL_UI_DIR=apiserver/src/ui serves the dashboard's script and stylesheet from the
    working tree instead of the binary: iterate on the UI without rebuilding (never in the test)."""
    d = os.environ.get("KAPSEL_UI_DIR")
    if not d:
        return
    def serve(body, ctype):
        return lambda route: route.fulfill(body=body, content_type=ctype)

    for name, ctype in [("app.js", "text/javascript"), ("style.css", "text/css")]:
        body = open(os.path.join(d, name), "rb").read()
        page.route(f"**/ui/{name}", serve(body, ctype))


def login(page):
    page.goto(URL + "/ui/")
    page.wait_for_selector("#login:not([hidden])", timeout=T)
    page.fill("#login-token", "not-a-token")
    page.click("#login-btn")
    page.wait_for_function(
        "() => document.querySelector('#login-error').textContent.includes('refused')", timeout=T
    )
    page.fill("#login-token", TOKEN)
    page.click("#login-btn")
    page.wait_for_selector("#app:not([hidden])", timeout=T)
    # every kind is being watched (the dot turns green)
    page.wait_for_selector("#conn.live", timeout=T)


def main():
    os.makedirs(ARTIFACTS, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
        )
        ctx = browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 900})
        page = ctx.new_page()
        dev_ui(page)
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        requests = []
        page.on("request", lambda r: requests.append((time.monotonic(), r.method, r.url)))
        # Why a watch ended (the page console.warn()s the error) and which requests failed:
        # shown if the page re-lists, to tell a connection drop from a server-sent ERROR.
        console = []
        page.on("console", lambda m: console.append((time.monotonic(), m.type, m.text)))
        failed = []
        page.on("requestfailed", lambda r: failed.append((time.monotonic(), r.url, r.failure)))

        step("log in")
        login(page)
        page.wait_for_selector("#nodes tbody tr", timeout=T)
        node_row = page.inner_text("#nodes tbody tr")
        assert "Ready" in node_row, node_row
        # marks this document: a reload would lose it
        page.evaluate("window.__kapselNoReload = 1")
        # record every text the rollout cell of deployment dash shows, as it changes
        page.evaluate(
            """() => {
              window.__rollout = [];
              window.__podsSeen = new Set();
              const obs = new MutationObserver(() => {
                const cell = document.querySelector('#deployments tr[data-deploy="default/dash"] td.rollout');
                if (cell) {
                  const t = cell.textContent;
                  if (window.__rollout[window.__rollout.length - 1] !== t) window.__rollout.push(t);
                }
                for (const tr of document.querySelectorAll('#pods tbody tr')) {
                  if ((tr.dataset.pod || '').startsWith('default/dash-')) window.__podsSeen.add(tr.dataset.pod);
                }
              });
              obs.observe(document.querySelector('#app'), { childList: true, subtree: true, characterData: true });
            }"""
        )
        assert page.locator('#pods tr[data-pod^="default/dash-"]').count() == 0

        step("apply v1 while the page is open")
        watch_start = time.monotonic()
        apply("v1")
        page.wait_for_function(
            """() => [...document.querySelectorAll('#pods tr[data-pod^="default/dash-"]')]
                  .filter((tr) => tr.children[1].textContent.startsWith('Running 1/1')).length === 3""",
            timeout=T,
        )
        page.wait_for_function(
            """() => { const c = document.querySelector('#deployments tr[data-deploy="default/dash"] td.rollout');
                       return c && c.textContent.includes('rev 1 complete'); }""",
            timeout=T,
        )
        step("three pods Running, rollout rev 1 complete")
        v1_pods = set(page.evaluate("[...window.__podsSeen]"))
        assert len(v1_pods) >= 3, v1_pods

        step("apply v2: a rolling update")
        apply("v2")
        page.wait_for_function(
            """() => { const c = document.querySelector('#deployments tr[data-deploy="default/dash"] td.rollout');
                       return c && c.textContent.includes('rev 2 complete'); }""",
            timeout=T,
        )
        page.wait_for_function(
            """() => [...document.querySelectorAll('#pods tr[data-pod^="default/dash-"]')]
                  .filter((tr) => tr.children[1].textContent.startsWith('Running 1/1')).length === 3""",
            timeout=T,
        )
        rollout = page.evaluate("window.__rollout")
        step(f"rollout texts seen: {rollout}")
        progressing = [t for t in rollout if "progressing" in t or "waiting" in t]
        assert progressing, f"no intermediate rollout state seen: {rollout}"
        assert any("of 3 updated" in t for t in rollout), rollout
        assert rollout[-1].startswith("rev 2 complete"), rollout
        assert page.evaluate("window.__kapselNoReload") == 1, "the page was reloaded"
        now_pods = set(
            page.evaluate(
                """() => [...document.querySelectorAll('#pods tr[data-pod^="default/dash-"]')]
                      .filter((tr) => tr.children[1].textContent.startsWith('Running'))
                      .map((tr) => tr.dataset.pod)"""
            )
        )
        assert not (now_pods & v1_pods), f"v1 pods replaced: {v1_pods} -> {now_pods}"

        step("events of the rollout are listed")
        page.wait_for_selector('#events tr[data-reason="ScalingReplicaSet"]', timeout=T)

        step("open a pod's logs")
        page.locator('#pods tr[data-pod^="default/dash-"]').first.click()
        page.wait_for_selector("#logs:not([hidden])", timeout=T)
        page.wait_for_function(
            "() => document.querySelector('#log-pre').textContent.includes('hello from dash v2')",
            timeout=T,
        )
        title = page.inner_text("#log-title")
        assert title.startswith("default/dash-") and "(app)" in title, title

        step("no polling: data requests after the first lists are watches")
        later = [
            (m, u)
            for (t, m, u) in requests
            if t > watch_start
            and ("/api/" in u or "/apis/" in u)
            and "/metrics.k8s.io/" not in u
            and "/log?" not in u
        ]
        lists = [u for (_, u) in later if "watch=" not in u]
        assert len(lists) <= 2, (
            f"the page re-listed during the rollout (polling?): {lists}\n"
            f"console: {[c for c in console if c[0] > watch_start]}\n"
            f"failed requests: {[f for f in failed if f[0] > watch_start]}"
        )

        shot = os.path.join(ARTIFACTS, "dashboard.png")
        page.screenshot(path=shot, full_page=True)
        print(f"screenshot: {shot}")

        step("phone-sized viewport")
        phone = browser.new_context(
            ignore_https_errors=True,
            viewport={"width": 390, "height": 844},
            device_scale_factor=2,
            is_mobile=True,
            has_touch=True,
        )
        pp = phone.new_page()
        dev_ui(pp)
        pp.on("pageerror", lambda e: errors.append(str(e)))
        login(pp)
        pp.wait_for_function(
            """() => document.querySelectorAll('#pods tr[data-pod^="default/dash-"]').length === 3""",
            timeout=T,
        )
        widths = pp.evaluate(
            "({ doc: document.documentElement.scrollWidth, view: window.innerWidth })"
        )
        assert widths["doc"] <= widths["view"], f"page wider than the phone: {widths}"
        # what matters on each table is on screen, not behind a sideways scroll
        for sel in [
            "#nodes tbody tr td:nth-child(2)",
            "#deployments tbody tr td.rollout",
            '#pods tr[data-pod^="default/dash-"] td:nth-child(2)',
            "#events tbody tr td.msg",
        ]:
            right = pp.evaluate(
                "(sel) => document.querySelector(sel).getBoundingClientRect().right", sel
            )
            assert right <= widths["view"], f"{sel} ends at {right}px, past the phone's {widths}"
        font = pp.evaluate("parseFloat(getComputedStyle(document.querySelector('#pods td')).fontSize)")
        assert font >= 12, f"text too small on a phone: {font}px"
        shot = os.path.join(ARTIFACTS, "dashboard-phone.png")
        pp.screenshot(path=shot)
        print(f"screenshot: {shot}")

        assert not errors, f"script errors in the page: {errors}"
        browser.close()
    kapsel("delete", "deployment", "dash")
    print("dashboard: ok")


if __name__ == "__main__":
    main()
