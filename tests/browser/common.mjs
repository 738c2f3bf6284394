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
