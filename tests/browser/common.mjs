// Shared set-up of the browser scripts: their environment, a logger, and a page of headless
// Debian chromium (flags that keep it off the closed network; the App's own e2e flag set).

import fs from "node:fs";
import path from "node:path";
import { chromium } from "playwright-core";

// ZCORE_APP_URL, ZCORE_DATASET, ZCORE_SHOTS_DIR (created), CHROMIUM_PATH (optional).
export function readEnv() {
  const env = {
    APP_URL: process.env.ZCORE_APP_URL,
    DATASET: process.env.ZCORE_DATASET,
    SHOTS: process.env.ZCORE_SHOTS_DIR,
    CHROMIUM: process.env.CHROMIUM_PATH || "/usr/bin/chromium",
  };
  if (!env.APP_URL || !env.DATASET || !env.SHOTS) {
    console.error("ZCORE_APP_URL, ZCORE_DATASET and ZCORE_SHOTS_DIR must be set");
    process.exit(2);
  }
  fs.mkdirSync(env.SHOTS, { recursive: true });
  return env;
}

const t0 = Date.now();
export const log = (msg) => console.log(`[${((Date.now() - t0) / 1000).toFixed(1)}s] ${msg}`);

export async function openPage({ chromiumPath, viewport, timeout }) {
  const browser = await chromium.launch({
    executablePath: chromiumPath,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  const context = await browser.newContext({ viewport });
  // The App's own e2e flag: no analytics, no "Explore Enterprise" popover, no toasts over the grid.
  await context.addInitScript(() => {
    window.IS_PLAYWRIGHT = true;
  });
  const page = await context.newPage();
  page.setDefaultTimeout(timeout);
  return { browser, page };
}

// On failure: the error, the partial result, page errors, and failure.png / failure.html in
// `shots`; sets a non-zero exit code.
export async function reportFailure(page, shots, err, result, pageErrors) {
  console.error(`FAILED: ${err.stack || err}`);
  console.error(`partial result: ${JSON.stringify(result)}`);
  if (pageErrors.length) console.error(`page errors: ${pageErrors.join("\n")}`);
  try {
    await page.screenshot({ path: path.join(shots, "failure.png") });
    fs.writeFileSync(path.join(shots, "failure.html"), await page.content());
    console.error(`failure artifacts in ${shots}`);
  } catch {}
  process.exitCode = 1;
}

// `settle()`: resolves once no request to the operator endpoints has been in flight for
// `quietMs` (the dynamic forms re-resolve on each edit); throws after `timeout`.
export function trackOperatorRequests(page, defaultTimeout) {
  let inflight = 0;
  const isOp = (r) => r.url().includes("/operators");
  page.on("request", (r) => isOp(r) && inflight++);
  page.on("requestfinished", (r) => isOp(r) && inflight--);
  page.on("requestfailed", (r) => isOp(r) && inflight--);
  return async function settle(quietMs = 750, timeout = defaultTimeout) {
    const end = Date.now() + timeout;
    let quietSince = Date.now();
    while (Date.now() < end) {
      if (inflight > 0) quietSince = Date.now();
      else if (Date.now() - quietSince >= quietMs) return;
      await page.waitForTimeout(100);
    }
    throw new Error("operator requests did not settle");
  };
}

// `shot(name)`: a screenshot of the page in `shots`, the mouse moved off the grid first (no
// hover highlight on a thumbnail).
export function screenshotter(page, shots) {
  return async function shot(name) {
    await page.mouse.move(5, 895);
    await page.waitForTimeout(300);
    await page.screenshot({ path: path.join(shots, name) });
    log(`screenshot ${name}`);
  };
}

// `waitFor(fn, what, timeout)`: polls `fn` until it returns something truthy, and returns it;
// throws after `timeout` with the last value seen.
export function poller(page, defaultTimeout) {
  return async function waitFor(fn, what, timeout = defaultTimeout) {
    const end = Date.now() + timeout;
    let last;
    while (Date.now() < end) {
      last = await fn();
      if (last) return last;
      await page.waitForTimeout(200);
    }
    throw new Error(`timed out waiting for ${what} (last: ${JSON.stringify(last)})`);
  };
}

// The operator prompt: `modal`, `formInput(label)` (the input after a form label, a <p>) and
// `openOperator(label)` (from the operator browser, then `settle()` until the form resolved).
export function operatorPrompt(page, settle) {
  const modal = page.locator("[data-cy=operators-prompt-modal]");
  const formInput = (label) =>
    modal.locator(`xpath=.//p[normalize-space()='${label}']/following::input[1]`);
  async function openOperator(label) {
    await page.locator("[data-cy=action-browse-operations]").click();
    await page.keyboard.type("ZCore");
    await page.getByText(label, { exact: true }).click();
    await modal.waitFor();
    await settle();
  }
  return { modal, formInput, openOperator };
}
