// Drives the real FiftyOne App (headless Debian chromium via playwright-core) through the
// "ZCore: coreset" panel: open it, move the size control, read the count it shows, save the kept
// set as a view. Run by tests/test_panel_browser.py, which creates the scored dataset and serves
// the App. Environment: ZCORE_APP_URL, ZCORE_DATASET, ZCORE_SHOTS_DIR, CHROMIUM_PATH (optional),
// ZCORE_VIEW_NAME (the view to save). Prints `RESULT {json}` on success; exits non-zero (with
// failure.png / failure.html in ZCORE_SHOTS_DIR) on failure.

import path from "node:path";
import { log, openPage, poller, readEnv, reportFailure } from "./common.mjs";

const { APP_URL, DATASET, SHOTS, CHROMIUM } = readEnv();
const VIEW_NAME = process.env.ZCORE_VIEW_NAME || "panel_coreset";
const TAKEN_NAME = process.env.ZCORE_TAKEN_VIEW || "taken"; // a saved view that exists
const QUEUED = process.env.ZCORE_QUEUED_OP || ""; // the name of a queued delegated operation
const TAG = process.env.ZCORE_TAG || "labelled"; // samples tagged before: grow from them
const BALANCED_VIEW = process.env.ZCORE_BALANCED_VIEW || "panel_balanced";
const T = { load: 60_000, ui: 20_000 };

const { browser, page } = await openPage({
  chromiumPath: CHROMIUM,
  viewport: { width: 1600, height: 1250 },
  timeout: T.ui,
});
const pageErrors = [];
page.on("pageerror", (e) => {
  pageErrors.push(String(e));
  log(`page error: ${e}\n${e.stack}`);
});

const waitFor = poller(page, T.ui);

const panel = page.locator("[data-cy=panel-content-coreset_panel]");

// Elements of the panel wider than their box (a horizontal scroll bar or clipped content):
// [{tag, cls, text, scrollWidth, clientWidth}], for boxes that scroll or clip horizontally.
async function overflowing() {
  return panel.evaluate((root) => {
    const out = [];
    for (const e of [root, ...root.querySelectorAll("*")]) {
      const ox = getComputedStyle(e).overflowX;
      if (!["auto", "scroll", "hidden"].includes(ox) && e !== root) continue;
      if (e.scrollWidth > e.clientWidth + 1 && e.clientWidth > 0) {
        out.push({
          tag: e.tagName,
          cls: String(e.className).slice(0, 60),
          text: (e.innerText || "").slice(0, 40),
          scrollWidth: e.scrollWidth,
          clientWidth: e.clientWidth,
        });
      }
    }
    return out;
  });
}

// Buttons whose label is clipped (text wider than the button).
async function clippedButtons() {
  return panel.locator("button").evaluateAll((bs) =>
    bs.filter((b) => b.scrollWidth > b.clientWidth + 1).map((b) => b.innerText),
  );
}

// "Kept: N of M" as shown by the panel.
async function keptText() {
  const text = await panel.innerText().catch(() => "");
  const m = text.match(/Kept:\s*([\d,]+)\s+of\s+([\d,]+)/);
  return m ? { kept: Number(m[1].replace(/,/g, "")), of: Number(m[2].replace(/,/g, "")) } : null;
}

const result = {};
try {
  await page.goto(`${APP_URL}/datasets/${encodeURIComponent(DATASET)}`, { timeout: T.load });
  await page.locator("[data-cy=looker]").first().waitFor({ timeout: T.load });
  await waitFor(
    () =>
      page.locator("[data-cy=looker] canvas").evaluateAll(
        (cs) => cs.length > 0 && cs.every((c) => c.getAttribute("canvas-loaded") === "true"),
      ),
    "the grid thumbnails to load",
  );
  log("dataset page loaded");

  // 1. Open the panel from the "+" (new panel) menu of the grid's space.
  await page.locator("[data-cy=new-panel-btn]").first().click();
  const option = page.locator("[data-cy^=new-panel-option-][data-cy*=coreset_panel]").first();
  await option.waitFor();
  // the option's icon: an <svg> (Material icon) or an <img> that loaded
  // (an element of icon size left of the label: an <svg>, an <img> that loaded, or a glyph)
  result.menu_icon = await option.evaluate((el) => {
    const label = [...el.querySelectorAll("*")].find((e) => e.innerText === "ZCore: coreset");
    const right = label ? label.getBoundingClientRect().left : Infinity;
    const icon = [...el.querySelectorAll("svg, img, span, i")].find((e) => {
      const r = e.getBoundingClientRect();
      const loaded = e.tagName !== "IMG" || (e.complete && e.naturalWidth > 0);
      return loaded && r.width >= 8 && r.width <= 32 && r.height >= 8 && r.right <= right;
    });
    return icon ? icon.tagName.toLowerCase() : null;
  });
  await page.screenshot({ path: path.join(SHOTS, "panel_menu.png") });
  await option.click();
  await panel.waitFor({ timeout: T.load });
  const first = await waitFor(keptText, "the panel's kept count");
  result.initial = first;
  log(`panel open: kept ${first.kept} of ${first.of}; menu icon: ${result.menu_icon}`);

  // Layout: nothing wider than the panel, no clipped button, a legend on both charts, the
  // histogram's x range.
  await waitFor(async () => (await panel.locator(".js-plotly-plot").count()) >= 2, "two plots");
  await page.waitForTimeout(1000);
  result.overflow = await overflowing();
  result.clipped_buttons = await clippedButtons();
  // the buttons beside the name and tag inputs: vertical centre offset from the input box's
  const centre = async (loc) => {
    const b = await loc.boundingBox();
    return b.y + b.height / 2;
  };
  const inputAfter = (label) =>
    panel.locator(`xpath=.//p[normalize-space()='${label}']/following::input[1]`);
  result.button_offsets = [
    (await centre(panel.getByRole("button", { name: "Save as view", exact: true }))) -
      (await centre(inputAfter("View name"))),
    (await centre(panel.getByRole("button", { name: "Tag kept samples", exact: true }))) -
      (await centre(inputAfter("Tag"))),
  ];
  log(`button offsets ${JSON.stringify(result.button_offsets)}`);
  const plots = panel.locator(".js-plotly-plot");
  result.legends = await plots.evaluateAll((ps) =>
    ps.map((p) => [...p.querySelectorAll(".legendtext")].map((t) => t.textContent)),
  );
  result.hist_range = await plots.first().evaluate((p) => p._fullLayout.xaxis.range);
  result.plot_widths = await plots.evaluateAll((ps) =>
    ps.map((p) => [
      Number(p.querySelector(".main-svg").getAttribute("width")),
      p.closest("[data-cy=panel-content-coreset_panel]").clientWidth,
    ]),
  );
  log(`overflow ${JSON.stringify(result.overflow)}; legends ${JSON.stringify(result.legends)}`);
  if (process.env.ZCORE_DEBUG_LAYOUT) {
    const chain = await plots.first().evaluate((p) => {
      const out = [];
      for (let e = p; e && !String(e.className).includes("_scrollable"); e = e.parentElement) {
        const cs = getComputedStyle(e);
        out.push(`${e.tagName}.${String(e.className).slice(0, 50)} w=${e.clientWidth} sw=${e.scrollWidth} disp=${cs.display} pad=${cs.paddingLeft}/${cs.paddingRight} m=${cs.marginLeft}/${cs.marginRight} contain=${cs.contain} style=${e.getAttribute("style")}`);
      }
      return out;
    });
    log(chain.join("\n"));
  }
  // the fraction slider's value label (hover the thumb): two decimals
  const thumb = panel.locator(".MuiSlider-thumb").first();
  await thumb.hover();
  result.fraction_label = await waitFor(
    async () => (await panel.locator(".MuiSlider-valueLabelLabel").first().innerText()).trim(),
    "the fraction slider's value label",
  );
  log(`fraction label ${result.fraction_label}`);
  // the delegated operation queued before the App opened is listed
  if (QUEUED) {
    result.ops_line = await waitFor(async () => {
      const m = (await panel.innerText()).match(new RegExp(`${QUEUED}[^\n]*`));
      return m ? m[0].trim() : null;
    }, "the queued operation in the panel");
    log(`operation: ${result.ops_line}`);
    result.runs_line = await waitFor(async () => {
      const lines = (await panel.innerText()).split("\n").filter((l) => /queued/.test(l));
      return lines.length ? lines : null;
    }, "the queued run");
  }

  // 2. Keep by count, then move the slider.
  await panel.getByLabel("Count", { exact: true }).check();
  await panel.getByText("Count", { exact: true }).last().waitFor();
  const slider = panel.locator('.MuiSlider-root input[type="range"]').first();
  await waitFor(
    async () => (await slider.getAttribute("aria-valuemax")) === "40",
    "the count slider",
  );
  // Click on the slider's rail at two positions: each click is one committed change, which the
  // panel answers with a new count. Wait for the count to follow the slider's value each time.
  const rail = panel.locator(".MuiSlider-root").first();
  const steps = [];
  let moved;
  let target;
  for (const at of [0.25, 0.5]) {
    const box = await waitFor(() => rail.boundingBox(), "the slider (re-mounted on re-render)");
    await page.mouse.click(box.x + at * box.width, box.y + box.height / 2);
    target = Number(
      await waitFor(async () => {
        const v = Number(await slider.getAttribute("aria-valuenow"));
        return Math.abs(v - at * 40) <= 2 ? String(v) : null;
      }, `the slider to move to ~${at * 40}`),
    );
    moved = await waitFor(async () => {
      const k = await keptText();
      return k && k.kept === target ? k : null;
    }, `the panel to show ${target} kept`);
    steps.push(target);
    log(`slider at ${target}: kept ${moved.kept} of ${moved.of}`);
  }
  result.steps = steps;
  result.slider_value = target;
  result.moved = moved;

  // 3. Save the kept set as a named view: a name that exists is refused (nothing written) ...
  const nameInput = panel.locator("xpath=.//p[normalize-space()='View name']/following::input[1]");
  result.default_view_name = await nameInput.inputValue();
  await nameInput.fill(TAKEN_NAME);
  await nameInput.press("Tab");
  await page.waitForTimeout(1500);
  await panel.getByRole("button", { name: "Save as view", exact: true }).click();
  result.refused = (
    await waitFor(async () => {
      const m = (await panel.innerText()).match(/Not saved:[^\n]*/);
      return m ? m[0] : null;
    }, "the refusal")
  ).trim();
  log(result.refused);
  // ... and a free name is saved
  await nameInput.fill(VIEW_NAME);
  await nameInput.press("Tab");
  await page.waitForTimeout(1500);
  await panel.getByRole("button", { name: "Save as view", exact: true }).click();
  await panel.getByText(`Saved view '${VIEW_NAME}'`, { exact: false }).waitFor();
  result.saved = (await panel.getByText(`Saved view '${VIEW_NAME}'`).first().innerText()).trim();
  log(result.saved);

  // 4. Show the kept set in the grid; the panel keeps working on the full set meanwhile.
  const counts = page.locator("[data-cy=entry-counts]");
  await panel.getByRole("button", { name: "Show kept set", exact: true }).click();
  result.grid_kept = await waitFor(async () => {
    const t = (await counts.innerText()).trim();
    return t === `${target} samples` ? t : null;
  }, `the grid to show ${target} samples`);
  await page.waitForTimeout(1000);
  result.after_show = await waitFor(keptText, "the panel's count after showing the kept set");
  log(`grid shows ${result.grid_kept}; panel: kept ${result.after_show.kept} of ${result.after_show.of}`);
  // "Run select_coreset…" from the kept set: the form counts on the panel's view (all samples)
  await panel.getByRole("button", { name: "Run select_coreset…", exact: true }).click();
  const modal = page.locator("[data-cy=operators-prompt-modal]");
  await modal.waitFor();
  result.prompt_preview = (
    await waitFor(async () => {
      const m = (await modal.innerText()).match(/[\d,]+ of [\d,]+ scored samples will be kept/);
      return m ? m[0] : null;
    }, "the select form's preview")
  ).trim();
  await page.waitForTimeout(1000); // the form re-resolves with the panel's params
  result.prompt_execute_disabled = await modal
    .getByRole("button", { name: "Execute", exact: true })
    .isDisabled();
  log(`select form: ${result.prompt_preview}; Execute disabled: ${result.prompt_execute_disabled}`);
  await page.screenshot({ path: path.join(SHOTS, "panel_select_prompt.png") });
  const cancel = modal.getByRole("button", { name: "Cancel", exact: true });
  if (await cancel.count()) await cancel.first().click();
  else await page.keyboard.press("Escape");
  await modal.waitFor({ state: "detached" }).catch(() => page.keyboard.press("Escape"));
  await panel.getByRole("button", { name: "Show all", exact: true }).click();
  await waitFor(async () => (await counts.innerText()).trim() === "40 samples", "all samples");

  // 5. Compare with the second score field (seed 1).
  const compare = panel.locator(
    "xpath=.//p[normalize-space()='Compare with']/following::*[@role='combobox'][1]",
  );
  await compare.click();
  await page.getByRole("option", { name: "zcore_seed1", exact: true }).click();
  const line = await waitFor(async () => {
    const m = (await panel.innerText()).match(/Overlap:[^\n]*zcore_seed1:[^\n]*/);
    return m ? m[0] : null;
  }, "the overlap with zcore_seed1");
  result.overlap = line.trim();
  log(result.overlap);

  // keyboard focus may have scrolled the panel sideways: back to its left edge, top
  await panel.evaluate((el) => {
    for (const e of [el, ...el.querySelectorAll("*")]) {
      if (e.scrollLeft) e.scrollLeft = 0;
      if (e.scrollTop) e.scrollTop = 0;
    }
  });
  await page.mouse.move(5, 1245);
  await page.waitForTimeout(500);
  result.overflow_end = await overflowing();
  await page.screenshot({ path: path.join(SHOTS, "app_panel.png") });
  log("screenshot app_panel.png");
  // the lower part of the panel (scheduled operations, runs)
  await panel.evaluate((el) => {
    for (const e of [el, ...el.querySelectorAll("*")]) {
      if (e.scrollHeight > e.clientHeight + 1) e.scrollTop = e.scrollHeight;
    }
  });
  await page.waitForTimeout(500);
  // the recorded coreset evaluation: its table and its plot
  const panelText = await panel.innerText();
  result.evaluations = panelText.slice(panelText.indexOf("Coreset evaluations"));
  result.evaluation_plot = await panel
    .locator(".js-plotly-plot")
    .filter({ hasText: "Probe accuracy vs kept fraction" })
    .count();
  await page.screenshot({ path: path.join(SHOTS, "app_panel_bottom.png") });
  await panel.evaluate((el) => {
    for (const e of [el, ...el.querySelectorAll("*")]) if (e.scrollTop) e.scrollTop = 0;
  });

  // 6. Grow from the tagged samples, then write the ranks of the kept set.
  const choose = async (label, option) => {
    const box = panel.locator(
      `xpath=.//p[normalize-space()='${label}']/following::*[@role='combobox'][1]`,
    );
    await box.click();
    await page.getByRole("option", { name: option, exact: true }).click();
  };
  await choose("Grow from samples tagged (optional)", TAG);
  result.grow_line = (
    await waitFor(async () => {
      const m = (await panel.innerText()).match(/[\d,]+ of them already tagged[^\n]*/);
      return m ? m[0] : null;
    }, "the grow summary")
  ).trim();
  result.grown = await keptText();
  log(`grow: ${result.grow_line}`);
  await page.mouse.move(5, 1245);
  await page.waitForTimeout(500);
  await page.screenshot({ path: path.join(SHOTS, "app_panel_grow.png") });
  const rankLabel = "Rank field (1 = first kept)";
  const rankInput = panel.locator(`xpath=.//p[normalize-space()='${rankLabel}']/following::input[1]`);
  result.rank_offset =
    (await centre(panel.getByRole("button", { name: "Write ranks", exact: true }))) -
    (await centre(rankInput));
  result.default_rank_field = await rankInput.inputValue();
  await panel.getByRole("button", { name: "Write ranks", exact: true }).click();
  result.ranks_msg = (
    await waitFor(async () => {
      const m = (await panel.innerText()).match(/Wrote ranks[^\n]*/);
      return m ? m[0] : null;
    }, "the ranks message")
  ).trim();
  log(result.ranks_msg);

  // 7. No more growing; balance by the labels with equal quotas, and save that kept set.
  await choose("Grow from samples tagged (optional)", "None");
  await waitFor(async () => !/already tagged/.test(await panel.innerText()), "grow cleared");
  await choose("Balance by (optional)", "ground_truth");
  await panel.getByLabel("Equal per value", { exact: true }).check();
  result.balance_line = (
    await waitFor(async () => {
      const m = (await panel.innerText()).match(/Balanced over[^\n]*\(equal\)[^\n]*/);
      return m ? m[0] : null;
    }, "the balanced summary")
  ).trim();
  result.balanced = await keptText();
  result.rank_row_shown = await panel.getByRole("button", { name: "Write ranks" }).count();
  log(`balance: ${result.balance_line}`);
  await nameInput.fill(BALANCED_VIEW);
  await nameInput.press("Tab");
  await page.waitForTimeout(1500);
  await panel.getByRole("button", { name: "Save as view", exact: true }).click();
  await panel.getByText(`Saved view '${BALANCED_VIEW}'`, { exact: false }).waitFor();
  result.balanced_overflow = await overflowing();
  await page.mouse.move(5, 1245);
  await page.waitForTimeout(500);
  await page.screenshot({ path: path.join(SHOTS, "app_panel_balance.png") });

  // "entry is loading" is thrown inside the App's state library (recoil replaceState) when a
  // panel state update lands while one of the App's selectors is loading; the App recovers (the
  // steps above checked every update). Any other page error fails the test.
  result.page_errors = pageErrors.filter((e) => e !== "Error: entry is loading");
  result.ignored_page_errors = pageErrors.length - result.page_errors.length;
  console.log(`RESULT ${JSON.stringify(result)}`);
} catch (err) {
  await reportFailure(page, SHOTS, err, result, pageErrors);
} finally {
  await browser.close();
}
