// The operator forms' checks in the real FiftyOne App (headless Debian chromium via
// playwright-core): what a user sees before Execute, on a dataset that `make demo` would leave
// behind (a `zcore_score` field, a saved `zcore_coreset` view, an empty `ground_truth.logits`
// vector field) and on an empty saved view. Nothing is executed: every case is a DOM assertion on
// the form (input values, messages, the Execute button's disabled state, dropdown choices).
//
// Run by tests/test_forms_browser.py. Environment: ZCORE_APP_URL, ZCORE_DATASET, ZCORE_SHOTS_DIR,
// ZCORE_EMPTY_VIEW (the slug of an empty saved view), CHROMIUM_PATH (optional).
// Prints one line `RESULT {json}` on success; exits non-zero (with failure.png / failure.html in
// ZCORE_SHOTS_DIR) on failure.

import {
  log,
  openPage,
  operatorPrompt,
  readEnv,
  reportFailure,
  screenshotter,
  trackOperatorRequests,
} from "./common.mjs";

const { APP_URL, DATASET, SHOTS, CHROMIUM } = readEnv();
const EMPTY_VIEW = process.env.ZCORE_EMPTY_VIEW;

const COMPUTE_LABEL = "ZCore: compute coreset scores";
const SELECT_LABEL = "ZCore: select coreset";
const T = { load: 60_000, ui: 20_000 };

const { browser, page } = await openPage({
  chromiumPath: CHROMIUM,
  viewport: { width: 1400, height: 900 },
  timeout: T.ui,
});

const pageErrors = [];
page.on("pageerror", (e) => pageErrors.push(String(e)));

const settle = trackOperatorRequests(page, T.ui);
const shot = screenshotter(page, SHOTS);

const { modal, formInput, openOperator } = operatorPrompt(page, settle);
const executeButton = () => modal.getByRole("button", { name: "Execute", exact: true });
const executeDisabled = async () => await executeButton().isDisabled();
const text = async () => await modal.innerText();

async function closeOperator() {
  await modal.getByRole("button", { name: "Cancel", exact: true }).click();
  await modal.waitFor({ state: "detached" });
}

async function typeInto(label, value) {
  const input = formInput(label);
  await input.fill(value);
  await settle();
  await page.evaluate(() => document.activeElement && document.activeElement.blur());
  await settle();
}

// The choices of the dropdown that follows the label `label`.
async function dropdownChoices(label) {
  const box = modal.locator(
    `xpath=.//p[normalize-space()='${label}']/following::*[@role='combobox'][1]`,
  );
  await box.scrollIntoViewIfNeeded();
  await box.click();
  await page.getByRole("option").first().waitFor();
  const choices = (await page.getByRole("option").allInnerTexts()).map((t) => t.trim());
  return choices;
}

// Picks the choice whose first line (its label; a description may follow) is `choice`.
async function choose(label, choice) {
  await dropdownChoices(label);
  const options = page.getByRole("option");
  const titles = (await options.allInnerTexts()).map((t) => t.trim().split("\n")[0]);
  const i = titles.indexOf(choice);
  if (i < 0) throw new Error(`no choice '${choice}' in ${JSON.stringify(titles)}`);
  await options.nth(i).click();
  await settle();
}

// Whether the element holding `needle` lies inside the modal's visible area (no scrolling).
async function visibleWithoutScrolling(needle) {
  const el = modal.getByText(needle, { exact: false }).first();
  const [box, frame] = [await el.boundingBox(), await modal.boundingBox()];
  return Boolean(box && frame && box.y >= frame.y && box.y + box.height <= frame.y + frame.height);
}

// Labels of the form's inputs (the <p> labels), in order.
const labels = async () =>
  (await modal.locator("p").allInnerTexts()).map((t) => t.trim()).filter(Boolean);

const result = {};
try {
  await page.goto(`${APP_URL}/datasets/${encodeURIComponent(DATASET)}`, { timeout: T.load });
  await page.locator("[data-cy=looker]").first().waitFor({ timeout: T.load });

  // 1. compute_zcore on the dataset: a free score field, a short form, only fields with vectors.
  await openOperator(COMPUTE_LABEL);
  await modal.getByText("Compute ZCore scores", { exact: true }).waitFor();
  result.compute_score_field = await formInput("Score field").inputValue();
  result.compute_execute_disabled = await executeDisabled();
  result.compute_labels = await labels();
  result.compile_hint = (await text()).includes("compiles the scoring engine");
  result.embedding_choices = await dropdownChoices("Embeddings field");
  await page.keyboard.press("Escape");
  await settle();
  await shot("forms_compute.png");

  // The model dropdown and its list fit in the dialog.
  await modal.getByText("Compute with a model", { exact: true }).click();
  await settle();
  const model = modal.locator("xpath=.//p[normalize-space()='Model']/following::*[@role='combobox'][1]");
  await model.click();
  await page.getByRole("option").first().waitFor();
  const frame = await modal.boundingBox();
  const boxes = [await model.boundingBox(), await page.getByRole("listbox").boundingBox()];
  result.model_overflow = boxes.map((b) =>
    Math.max(0, frame.x - b.x, b.x + b.width - (frame.x + frame.width)),
  );
  result.model_choices = (await page.getByRole("option").allInnerTexts()).map((t) => t.trim());
  await shot("forms_model.png");
  await page.keyboard.press("Escape");
  await modal.getByText("Use embeddings already stored on the samples", { exact: true }).click();
  await settle();

  // 2. The advanced section: every law input has a description; absurd sampling points refused.
  await modal
    .locator("xpath=.//*[normalize-space()='Advanced options']/preceding::input[@type='checkbox'][1]")
    .check();
  await modal.getByText("Sampling points", { exact: true }).waitFor();
  await settle();
  result.advanced_text = await text();
  await typeInto("Sampling points", "1000000000000");
  result.points_error = (await text()).match(/Value must be[^\n]*/)?.[0] ?? null;
  result.points_execute_disabled = await executeDisabled();
  await shot("forms_points.png");
  await closeOperator();

  // 3. select_coreset: the saved view name offered is free; a taken name disables Execute.
  await openOperator(SELECT_LABEL);
  await modal.getByText("scored samples will be kept", { exact: false }).waitFor();
  result.select_view_name = await formInput("Save as view").inputValue();
  result.select_execute_disabled = await executeDisabled();
  result.fraction_label = (await text()).match(/Fraction\n+([0-9.]+)/)?.[1] ?? null;
  await typeInto("Save as view", "zcore_coreset");
  result.taken_name_text = await text();
  result.taken_name_execute_disabled = await executeDisabled();
  await modal.getByText("Tag samples", { exact: true }).scrollIntoViewIfNeeded();
  await shot("forms_taken_view.png");
  await typeInto("Save as view", "fresh_name");
  result.fresh_name_execute_disabled = await executeDisabled();

  // 4. cluster_balanced previews its count; its help is plain words.
  result.method_choices = await dropdownChoices("Method");
  await page.keyboard.press("Escape");
  await settle();
  await choose("Method", "Cluster-balanced");
  result.cluster_text = await text();
  await shot("forms_cluster_balanced.png");

  // 5. A threshold above every score keeps nothing: Execute disabled, the form says why.
  await choose("Method", "Top scores");
  await modal.getByText("Score threshold", { exact: true }).click();
  await settle();
  await typeInto("Keep scores >=", "1.5");
  result.threshold_text = await text();
  result.threshold_execute_disabled = await executeDisabled();
  await shot("forms_threshold.png");
  await closeOperator();

  // 5b. Grow from tagged samples, ranked, balance by a field (issue 15's options).
  await openOperator(SELECT_LABEL);
  await modal.getByText("scored samples will be kept", { exact: false }).waitFor();
  await choose("Grow from samples tagged (optional)", "labelled");
  result.include_text = await text();
  result.include_execute_disabled = await executeDisabled();
  await modal
    .locator(
      "xpath=.//*[normalize-space()='Ranked (label the first ones first)']" +
        "/preceding::input[@type='checkbox'][1]",
    )
    .check();
  await settle();
  await typeInto("Write the rank to field", "zcore_rank");
  result.ranked_text = await text();
  result.ranked_execute_disabled = await executeDisabled();
  await modal.getByText("Write the rank to field", { exact: true }).scrollIntoViewIfNeeded();
  await shot("forms_include_ranked.png");
  await choose("Balance by (optional)", "ground_truth.label");
  result.include_balance_text = await text();
  result.include_balance_execute_disabled = await executeDisabled();
  await closeOperator();

  // 6. An empty view: Execute disabled, the reason visible without scrolling, no "0 samples" help.
  await page.goto(
    `${APP_URL}/datasets/${encodeURIComponent(DATASET)}?view=${encodeURIComponent(EMPTY_VIEW)}`,
    { timeout: T.load },
  );
  await page.waitForTimeout(1500);
  await openOperator(COMPUTE_LABEL);
  await modal.getByText("ZCore needs at least 3", { exact: false }).waitFor();
  result.empty_text = await text();
  result.empty_execute_disabled = await executeDisabled();
  result.empty_reason_visible = await visibleWithoutScrolling("ZCore needs at least 3");
  await shot("forms_empty_view.png");
  await closeOperator();
  await openOperator(SELECT_LABEL);
  result.empty_select_text = await text();
  result.empty_select_execute_disabled = await executeDisabled();
  await closeOperator();

  result.page_errors = pageErrors;
  console.log(`RESULT ${JSON.stringify(result)}`);
} catch (err) {
  await reportFailure(page, SHOTS, err, result, pageErrors);
} finally {
  await browser.close();
}
