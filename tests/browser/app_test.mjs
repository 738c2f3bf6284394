// Drives the real FiftyOne App (headless Debian chromium via playwright-core) through the zcore
// operators: "ZCore: compute coreset scores", then "ZCore: select coreset".
//
// Run by tests/test_app_browser.py, which creates the dataset and serves the App. Environment:
//   ZCORE_APP_URL    App base URL, e.g. http://127.0.0.1:5151
//   ZCORE_DATASET    dataset name
//   ZCORE_SHOTS_DIR  where screenshots (and failure artifacts) are written
//   CHROMIUM_PATH    optional, default /usr/bin/chromium
// Prints one line `RESULT {json}` on success; exits non-zero (with failure.png / failure.html in
// ZCORE_SHOTS_DIR) on failure.

import {
  log,
  openPage,
  operatorPrompt,
  poller,
  readEnv,
  reportFailure,
  screenshotter,
  trackOperatorRequests,
} from "./common.mjs";

const { APP_URL, DATASET, SHOTS, CHROMIUM } = readEnv();

const COMPUTE_LABEL = "ZCore: compute coreset scores";
const SELECT_LABEL = "ZCore: select coreset";
const FORM = { "Sampling points": "400", "Redundancy neighbours": "10", Seed: "0" };
const T = { load: 60_000, ui: 20_000, run: 90_000 };

const { browser, page } = await openPage({
  chromiumPath: CHROMIUM,
  viewport: { width: 1400, height: 900 },
  timeout: T.ui,
});

const pageErrors = [];
page.on("pageerror", (e) => pageErrors.push(String(e)));

const settle = trackOperatorRequests(page, T.ui);

const waitFor = poller(page, T.ui);

const shot = screenshotter(page, SHOTS);

const { modal, formInput, openOperator } = operatorPrompt(page, settle);
const openAdvanced = async () => {
  const box = modal.locator(
    "xpath=.//*[normalize-space()='Advanced options']/preceding::input[@type='checkbox'][1]",
  );
  await box.check();
  await modal.getByText("Sampling points", { exact: true }).waitFor();
};
async function execute(doneTitle) {
  await modal.getByRole("button", { name: "Execute", exact: true }).click();
  await modal.getByText(doneTitle, { exact: true }).waitFor({ timeout: T.run });
}

// Value shown next to an output label in the operator's result view, e.g. "Samples scored:".
async function outputValue(label) {
  const text = await modal.innerText();
  const m = text.match(new RegExp(`${label}:\\s*([^\\n]*)`));
  return m ? m[1].trim() : null;
}

async function thumbnailScores() {
  const titles = await page.locator("[data-cy=tag-zcore_score]").evaluateAll((els) =>
    els.map((e) => e.getAttribute("title")),
  );
  return titles.map((t) => Number(t.split(":").pop()));
}

// Every rendered thumbnail has drawn its image.
async function gridLoaded() {
  await waitFor(
    () =>
      page.locator("[data-cy=looker] canvas").evaluateAll(
        (cs) => cs.length > 0 && cs.every((c) => c.getAttribute("canvas-loaded") === "true"),
      ),
    "the grid thumbnails to load",
  );
}

const result = {};
try {
  // 1. Dataset page.
  await page.goto(`${APP_URL}/datasets/${encodeURIComponent(DATASET)}`, { timeout: T.load });
  await page.locator("[data-cy=looker]").first().waitFor({ timeout: T.load });
  await gridLoaded();
  const count = (await page.locator("[data-cy=entry-counts]").innerText()).trim();
  log(`dataset page loaded: ${count}`);
  result.initial_count = count;
  if (await page.locator("[data-cy=sidebar-field-zcore_score]").count()) {
    throw new Error("zcore_score is in the sidebar before the operator ran");
  }

  // 2. compute_zcore form: the embeddings field is preselected; small run parameters.
  await openOperator(COMPUTE_LABEL);
  await modal.getByText("Compute ZCore scores", { exact: true }).waitFor();
  const embeddings = await modal.locator('input[placeholder="Type or select a value"]').inputValue();
  if (embeddings !== "embeddings") throw new Error(`embeddings field preselected: ${embeddings}`);
  result.form_embeddings = embeddings;
  // the essentials are on top; the law's options sit under "Advanced options"
  result.advanced_hidden = (await formInput("Sampling points").count()) === 0;
  await openAdvanced();
  for (const [label, value] of Object.entries(FORM)) {
    await formInput(label).fill(value);
    await settle();
  }
  for (const [label, value] of Object.entries(FORM)) {
    const got = await formInput(label).inputValue();
    if (got !== value) throw new Error(`form input '${label}' is '${got}', expected '${value}'`);
  }
  await page.evaluate(() => document.activeElement && document.activeElement.blur());
  await modal.locator('input[type=radio][value="field"]').scrollIntoViewIfNeeded();
  await shot("app_compute_zcore.png");

  // 3. Execute (immediately) and read the result view.
  await execute("ZCore scores computed");
  result.num_scored = await outputValue("Samples scored");
  result.seed = await outputValue("Seed");
  log(`compute_zcore done: scored=${result.num_scored} seed=${result.seed}`);
  await modal.getByRole("button", { name: "Close", exact: true }).click();
  await modal.waitFor({ state: "detached" });

  // 4. The new field is in the sidebar (the operator triggers reload_dataset); show it on the grid.
  const checkbox = page.locator("[data-cy=checkbox-zcore_score]");
  await checkbox.waitFor({ timeout: T.run });
  await checkbox.click();
  await page.locator("[data-cy=tag-zcore_score]").first().waitFor();

  // 5. Sort the grid by score, highest first, with a SortBy view stage.
  const stage = page.locator("[data-cy=input-view-stage]").first();
  await stage.click();
  await stage.fill("SortBy");
  await stage.press("Enter");
  const bar = page.locator("[data-cy=view-bar]");
  await bar.locator("textarea").fill("zcore_score");
  await bar.getByText("Submit", { exact: true }).click();
  const reverse = bar.locator('input[placeholder^="reverse"]');
  await reverse.fill("True");
  await reverse.press("Enter");
  await page.keyboard.press("Escape");
  const sorted = await waitFor(async () => {
    const s = await thumbnailScores();
    const desc = s.length >= 6 && s.every((v, i) => i === 0 || s[i - 1] >= v);
    return desc ? s : null;
  }, "thumbnails sorted by zcore_score, descending");
  result.top_scores = sorted.slice(0, 6);
  log(`grid sorted: ${sorted.slice(0, 6).join(", ")}`);
  await gridLoaded();
  await shot("app_scores.png");

  // 6. select_coreset: defaults (fraction 0.1 -> 4 of 40), saved as the 'zcore_coreset' view.
  await openOperator(SELECT_LABEL);
  await modal.getByText("scored samples will be kept", { exact: false }).waitFor();
  result.preview = (
    await modal.getByText("scored samples will be kept", { exact: false }).innerText()
  ).trim();
  await page.evaluate(() => document.activeElement && document.activeElement.blur());
  await shot("app_select_coreset.png");
  await execute("Coreset selected");
  result.kept = await outputValue("Samples kept");
  log(`select_coreset done: kept=${result.kept}`);
  await modal.getByRole("button", { name: "Close", exact: true }).click();
  await modal.waitFor({ state: "detached" });
  // show=True: the App now shows the coreset.
  result.coreset_count = await waitFor(async () => {
    const t = (await page.locator("[data-cy=entry-counts]").innerText()).trim();
    return /^4\s+samples$/.test(t) ? t : null;
  }, "the grid to show the 4-sample coreset");
  log(`grid shows the coreset: ${result.coreset_count}`);


  // 7. The Dask cluster field: a dropdown of 'local' and the server's ZCORE_DASK_SCHEDULERS only.
  await openOperator(COMPUTE_LABEL);
  await modal.getByText("Compute ZCore scores", { exact: true }).waitFor();
  await openAdvanced();
  const dask = modal.locator(
    "xpath=.//p[normalize-space()='Dask cluster (optional, delegated runs)']" +
      "/following::*[@role='combobox'][1]",
  );
  await dask.scrollIntoViewIfNeeded();
  await dask.click();
  await page.getByRole("option").first().waitFor();
  result.dask_choices = (await page.getByRole("option").allInnerTexts()).map((t) => t.trim());
  log(`Dask cluster choices: ${result.dask_choices.join(" | ")}`);
  await page.keyboard.press("Escape");

  result.page_errors = pageErrors;
  console.log(`RESULT ${JSON.stringify(result)}`);
} catch (err) {
  await reportFailure(page, SHOTS, err, result, pageErrors);
} finally {
  await browser.close();
}
