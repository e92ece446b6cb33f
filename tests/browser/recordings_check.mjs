// The console's Recordings view and record plans (issue 29) in headless Chromium, driven by
// tests/console_recordings.rs: at 1440x900 in English with an admin key, today's recordings of
// the channel recorded are listed (the channel chosen by itself), drawn on the timeline (its
// alarm clip in its own lane), zoomed to an hour, played from a click (the <video> advances),
// the alarm clip played from its MP4, the hour shown exported (the download's size and file),
// a file deleted (asked twice), an empty day explained, the bare stream chosen; a plan made
// through the form (a bad one's message from gmv shown first), changed, assigned to a channel
// whose state shows; retention shown. Then at 390x844 in Chinese with a viewer key: the same
// list, a play, a refused delete and a refused plan explained, the channel's state; nothing
// wider than the screen and no English words of the console's own. Screenshots in SHOTS_DIR.
// Usage: node recordings_check.mjs CONSOLE_URL ADMIN_KEY VIEWER_KEY DEVICE_ID CHANNEL_RECORDED CHANNEL_PLANNED STREAM_ID
// Prints JSON {ok, ...} as its last line.
import { chromium } from 'playwright-core';
import fs from 'node:fs';

const [url, key, viewerKey, device, chRec, chPlan, streamId] = process.argv.slice(2);
const shots = process.env.SHOTS_DIR || '.';
// Latin words the zh-CN view may hold outside data: units, formats, protocol and product names.
const LATIN_ALLOWED = new Set(['gmv', 'MP', 'KB', 'MB', 'GB', 'TB', 'UTC', 'SIP', 'HTTP']);
const CJK = /[\u3000-\u303f\u3400-\u9fff\uff00-\uffef]/;
const result = { ok: false, steps: [] };
const finish = async (browser) => {
  console.log(JSON.stringify(result));
  if (browser) await browser.close().catch(() => {});
  process.exit(result.ok ? 0 : 1);
};
setTimeout(() => { result.error = `timed out after ${result.steps.join(', ')}`; console.log(JSON.stringify(result)); process.exit(1); }, 420000).unref();

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
         '--disable-component-update', '--disable-sync', '--autoplay-policy=no-user-gesture-required'],
});

const text = async (page, sel) => ((await page.textContent(sel, { timeout: 5000 })) || '').trim();
const waitText = (page, sel, part, timeout = 15000) => page.waitForFunction(([s, p]) => {
  const e = document.querySelector(s);
  return e && e.textContent.includes(p);
}, [sel, part], { timeout, polling: 100 });

async function open(viewport, locale, extra = {}) {
  const phone = viewport.width < 500;
  const context = await browser.newContext({ viewport, locale, isMobile: phone, hasTouch: phone, acceptDownloads: true, ...extra });
  const page = await context.newPage();
  page.on('console', (m) => console.error(`${locale} page:`, m.text()));
  page.on('pageerror', (e) => { console.error(`${locale} page error:`, e); result.page_errors = [...(result.page_errors || []), String(e)]; });
  return { context, page };
}

async function signIn(page, k) {
  await page.goto(url);
  await page.fill('[data-testid=key]', k);
  await page.click('[data-testid=signin-button]');
  await page.waitForSelector('[data-testid=view-devices]:not([hidden])', { timeout: 15000 });
  await page.waitForSelector(`[data-testid=device-${device}]`, { timeout: 15000 });
}

async function openRecordings(page) {
  await page.click('[data-testid=nav-recordings]');
  await page.waitForSelector('[data-testid=view-recordings]:not([hidden])', { timeout: 5000 });
}

// The view's own words: its text without data (ids, names, the engine's words in <code> or
// .data, the choices of the selects), with placeholders and titles.
async function ownWords(page) {
  return page.evaluate(() => {
    const view = document.querySelector('[data-testid=view-recordings]');
    const clone = view.cloneNode(true);
    for (const e of clone.querySelectorAll('code, .data, select, [hidden]')) e.remove();
    const words = [clone.textContent, document.querySelector('[data-testid=nav-recordings]').textContent];
    for (const e of view.querySelectorAll('[placeholder], [aria-label], [title]:not([data-raw])')) {
      if (e.closest('[hidden]')) continue;
      words.push(e.getAttribute('placeholder') || '', e.getAttribute('aria-label') || '', e.getAttribute('title') || '');
    }
    return words.join('\n');
  });
}
async function languageProblems(page, language) {
  const words = await ownWords(page);
  if (language === 'zh-CN') {
    const latin = (words.match(/[A-Za-z]{2,}/g) || []).filter((w) => !LATIN_ALLOWED.has(w));
    return { latin, chinese: CJK.test(words) };
  }
  return { cjk: words.match(new RegExp(CJK.source, 'g')) || [] };
}

// Nothing wider than the screen (tables scroll in their own boxes).
const fits = (page) => page.evaluate(() => ({
  scroll: document.documentElement.scrollWidth,
  inner: window.innerWidth,
  wide: [...document.querySelectorAll('[data-testid=view-recordings] *')].filter((e) => e.getBoundingClientRect().right > window.innerWidth + 1
    && !e.closest('.table-scroll') && !e.closest('[hidden]')).map((e) => e.outerHTML.slice(0, 100)).slice(0, 5),
}));

// Watches the video from now on: the furthest time it reached and the frames it decoded (kept
// across a change of file), and where it was first seen playing.
const watchVideo = (page) => page.evaluate(() => {
  const v = document.querySelector('[data-testid=rec-video]');
  const w = { first: null, max: 0, frames: 0 };
  window.recWatch = w;
  if (!window.recWatching) {
    window.recWatching = true;
    v.addEventListener('timeupdate', () => {
      const x = window.recWatch;
      const frames = v.getVideoPlaybackQuality().totalVideoFrames;
      if (frames > 0 && x.first === null) x.first = v.currentTime;
      x.max = Math.max(x.max, v.currentTime);
      x.frames = Math.max(x.frames, frames);
    });
  }
});

// The video has played on (from where it was first seen) at least `seconds`, decoding frames.
async function videoAdvances(page, seconds) {
  await page.waitForFunction((s) => {
    const w = window.recWatch;
    return w.first !== null && w.max - w.first >= s && w.frames > 10;
  }, seconds, { timeout: 30000, polling: 100 });
  return page.evaluate(() => {
    const v = document.querySelector('[data-testid=rec-video]');
    const w = window.recWatch;
    return { first: w.first, max: w.max, advanced: w.max - w.first, frames: w.frames, src: v.currentSrc || v.src, width: v.videoWidth };
  });
}

const rowsOf = (page) => page.evaluate(() => [...document.querySelectorAll('[data-testid=rec-rows] tr')].map((tr) => ({ id: tr.dataset.testid, text: tr.textContent })));
const countOf = (page, prefix) => page.evaluate((p) => document.querySelectorAll(`[data-testid^=${p}]`).length, prefix);

// A click at the left edge of a span on the timeline (its start), with the video watched.
// Through a locator: the timeline is drawn again while a recording plays (its cursor moves),
// so an element handle taken before can be detached by the time it is clicked.
// Its box is asked again until one comes: a redraw can take the span out of the page between
// the locator finding it and measuring it (boundingBox then answers null).
async function clickSegment(page, testid) {
  const seg = page.locator(`[data-testid=${testid}]`);
  const deadline = Date.now() + 10000;
  let box = null;
  while (!box && Date.now() < deadline) {
    box = await seg.boundingBox({ timeout: 10000 }).catch(() => null);
    if (!box) await page.waitForTimeout(50);
  }
  if (!box) throw new Error(`${testid}: no box on the timeline within 10 s`);
  await watchVideo(page);
  await seg.click({ position: { x: Math.min(0.5, box.width / 2), y: box.height / 2 }, timeout: 10000 });
}

try {
  // ---- desktop, English, admin ----
  {
    const { context, page } = await open({ width: 1440, height: 900 }, 'en-US');
    const en = {};
    result.en = en;
    await signIn(page, key);
    await openRecordings(page);
    en.nav = await text(page, '[data-testid=nav-recordings]');
    await waitText(page, '[data-testid=rec-note]', 'recordings of', 20000);
    en.date = await page.inputValue('[data-testid=rec-date]');
    en.today = await page.evaluate(() => { const d = new Date(); return `${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, '0')}-${String(d.getDate()).padStart(2, '0')}`; });
    en.from_to = [await page.inputValue('[data-testid=rec-from]'), await page.inputValue('[data-testid=rec-to]')];
    en.source = await page.inputValue('[data-testid=rec-source]');
    en.note = await text(page, '[data-testid=rec-note]');
    en.segments = await countOf(page, 'rec-seg-');
    en.alarm_segments = await countOf(page, 'rec-alarm-');
    en.rows = await rowsOf(page);
    en.export_label_day = await text(page, '[data-testid=rec-export]');
    result.steps.push('listed');

    // Zoomed in to an hour around the recordings.
    en.zoom_steps = 0;
    while (!(await page.isDisabled('[data-testid=rec-zoom-in]')) && en.zoom_steps < 8) {
      await page.click('[data-testid=rec-zoom-in]');
      en.zoom_steps += 1;
    }
    en.span = await text(page, '[data-testid=rec-span]');
    en.zoom_out_enabled = !(await page.isDisabled('[data-testid=rec-zoom-out]'));
    en.segments_zoomed = await countOf(page, 'rec-seg-');
    en.alarm_segments_zoomed = await countOf(page, 'rec-alarm-');

    // A click on the continuous recording plays from there.
    await clickSegment(page, 'rec-seg-0');
    en.play = await videoAdvances(page, 1.5);
    en.play.status = await text(page, '[data-testid=rec-status]');
    en.play.cursor = await page.isVisible('[data-testid=rec-cursor]');
    en.play.playing_row = await page.evaluate(() => (document.querySelector('[data-testid=rec-rows] tr.playing') || {}).dataset?.testid || null);
    await page.screenshot({ path: `${shots}/recordings-desktop-en-files.png`, fullPage: true });
    result.steps.push('played');

    // The alarm clip: its MP4, from where it was clicked.
    en.alarm_segments_played = await countOf(page, 'rec-alarm-');
    if (en.alarm_segments > 0) {
      await clickSegment(page, 'rec-alarm-0');
      await waitText(page, '[data-testid=rec-status]', 'alarm clip');
      en.clip = await videoAdvances(page, 0.8);
      en.clip.status = await text(page, '[data-testid=rec-status]');
    }
    result.steps.push('clip');

    // The hour shown, exported as one MP4.
    en.export_label = await text(page, '[data-testid=rec-export]');
    const [download] = await Promise.all([page.waitForEvent('download', { timeout: 60000 }), page.click('[data-testid=rec-export]')]);
    await download.saveAs(`${shots}/export.mp4`);
    en.export = { name: download.suggestedFilename(), size: fs.statSync(`${shots}/export.mp4`).size };
    await waitText(page, '[data-testid=rec-export-status]', 'Exported');
    en.export.status = await text(page, '[data-testid=rec-export-status]');
    en.export.link_bytes = await page.getAttribute('[data-testid=rec-export-link]', 'data-bytes');
    en.download_href = await page.getAttribute('[data-testid^=rec-dl-]', 'href');
    result.steps.push('exported');

    // A continuous file deleted: the first click asks, the second deletes.
    const rows = await rowsOf(page);
    const victim = rows.filter((r) => r.text.includes('continuous recording') && !r.text.includes('being written')).pop();
    const stem = victim.id.replace('rec-row-', '');
    en.deleted = stem;
    await page.click(`[data-testid="rec-del-${stem}"]`);
    en.delete_asks = await text(page, `[data-testid="rec-del-${stem}"]`);
    await page.click(`[data-testid="rec-del-${stem}"]`);
    await page.waitForSelector(`[data-testid="rec-row-${stem}"]`, { state: 'detached', timeout: 10000 });
    en.delete_status = await text(page, '[data-testid=rec-files-status]');
    result.steps.push('deleted');

    // A day without recordings says so; back to today; the bare stream.
    await page.fill('[data-testid=rec-date]', '2001-01-01');
    await waitText(page, '[data-testid=rec-note]', 'No recording');
    en.empty_day = await text(page, '[data-testid=rec-note]');
    en.empty_export = await text(page, '[data-testid=rec-export]');
    en.empty_export_disabled = await page.isDisabled('[data-testid=rec-export]');
    await page.click('[data-testid=rec-today]');
    await waitText(page, '[data-testid=rec-note]', 'recordings of');
    en.stream_option = await page.evaluate((id) => [...document.querySelectorAll('[data-testid=rec-source] option')].some((o) => o.value === `s:${id}`), streamId);
    await page.selectOption('[data-testid=rec-source]', `s:${streamId}`);
    await waitText(page, '[data-testid=rec-note]', ` of stream ${streamId} on `);
    en.stream_note = await text(page, '[data-testid=rec-note]');
    en.stream_segments = await countOf(page, 'rec-seg-');
    en.words = await languageProblems(page, 'en');
    result.steps.push('stream');

    // ---- record plans ----
    await page.click('[data-testid=rec-tab-plans]');
    await page.waitForSelector('[data-testid=rec-plans-pane]:not([hidden])');
    await waitText(page, '[data-testid=retention]', 'every');
    en.retention = await text(page, '[data-testid=retention]');
    en.form_title = await text(page, '[data-testid=pf-title]');
    en.zone_default = await page.inputValue('[data-testid=pf-zone]');
    // A bad plan: gmv's own words on screen.
    await page.fill('[data-testid=pf-name]', 'night');
    await page.fill('[data-testid=pf-zone]', 'UTC');
    await page.fill('[data-testid=pf-start-0]', '18:00');
    await page.fill('[data-testid=pf-end-0]', '08:00');
    await page.click('[data-testid=pf-submit]');
    await waitText(page, '[data-testid=pf-status]', 'Not saved');
    en.bad_plan = await text(page, '[data-testid=pf-status]');
    // Hours added and removed again in the form.
    await page.click('[data-testid=pf-add-range]');
    en.ranges_added = await countOf(page, 'pf-range-');
    await page.click('[data-testid=pf-remove-1]');
    en.ranges_after_remove = await countOf(page, 'pf-range-');
    // A good one: all day, every day, in UTC, keeping 30 days.
    await page.fill('[data-testid=pf-name]', 'workdays');
    await page.fill('[data-testid=pf-start-0]', '00:00');
    await page.fill('[data-testid=pf-end-0]', '24:00');
    await page.fill('[data-testid=pf-keep]', '30');
    await page.click('[data-testid=pf-submit]');
    await page.waitForSelector('[data-testid=plan-row-workdays]', { timeout: 10000 });
    en.added = await text(page, '[data-testid=pf-status]');
    en.plan_row = await text(page, '[data-testid=plan-row-workdays]');
    en.plan_active = await text(page, '[data-testid=plan-active-workdays]');
    // Changed: kept 14 days.
    await page.click('[data-testid=plan-edit-workdays]');
    en.edit_title = await text(page, '[data-testid=pf-title]');
    en.edit_name_readonly = await page.evaluate(() => document.querySelector('[data-testid=pf-name]').readOnly);
    await page.fill('[data-testid=pf-keep]', '14');
    await page.click('[data-testid=pf-submit]');
    await waitText(page, '[data-testid=pf-status]', 'saved');
    await waitText(page, '[data-testid=plan-row-workdays]', '14 days');
    en.plan_row_changed = await text(page, '[data-testid=plan-row-workdays]');
    // Assigned to a channel: its state shows (recording once gmv has it).
    await page.selectOption('[data-testid=pa-channel]', `${device}/${chPlan}`);
    await page.selectOption('[data-testid=pa-plan]', 'workdays');
    await page.click('[data-testid=pa-set]');
    await waitText(page, '[data-testid=pa-status]', 'follows plan');
    en.assigned = await text(page, '[data-testid=pa-status]');
    await waitText(page, `[data-testid=pc-state-${chPlan}]`, 'recording', 30000);
    en.channel_row = await text(page, `[data-testid=pc-${chPlan}]`);
    en.retention_plans = await text(page, '[data-testid=retention]');
    en.plan_words = await languageProblems(page, 'en');
    await page.screenshot({ path: `${shots}/recordings-desktop-en-plans.png`, fullPage: true });
    result.steps.push('plans');
    await context.close();
  }

  // ---- phone, Chinese, viewer ----
  {
    const { context, page } = await open({ width: 390, height: 844 }, 'zh-CN', { timezoneId: 'Asia/Shanghai' });
    const zh = {};
    result.zh = zh;
    await signIn(page, viewerKey);
    zh.nav = await text(page, '[data-testid=nav-recordings]');
    await openRecordings(page);
    await waitText(page, '[data-testid=rec-note]', '段录像', 20000);
    zh.source = await page.inputValue('[data-testid=rec-source]');
    zh.note = await text(page, '[data-testid=rec-note]');
    zh.segments = await countOf(page, 'rec-seg-');
    zh.rows = (await rowsOf(page)).length;
    zh.tab = await text(page, '[data-testid=rec-tab-plans]');
    zh.fits_files = await fits(page);
    zh.words_files = await languageProblems(page, 'zh-CN');
    await page.screenshot({ path: `${shots}/recordings-phone-zh-files.png`, fullPage: true });
    // Played from a tap on the timeline.
    await clickSegment(page, 'rec-seg-0');
    zh.play = await videoAdvances(page, 1);
    zh.play.status = await text(page, '[data-testid=rec-status]');
    zh.fits_playing = await fits(page);
    // A viewer may not delete: said why.
    const row = (await rowsOf(page)).find((r) => r.text.includes('连续录像') && !r.text.includes('正在写入'));
    const stem = row.id.replace('rec-row-', '');
    await page.click(`[data-testid="rec-del-${stem}"]`);
    zh.delete_asks = await text(page, `[data-testid="rec-del-${stem}"]`);
    await page.click(`[data-testid="rec-del-${stem}"]`);
    await waitText(page, '[data-testid=rec-files-status]', '未删除');
    zh.delete_refused = await text(page, '[data-testid=rec-files-status]');
    zh.still_listed = await page.isVisible(`[data-testid="rec-row-${stem}"]`);
    result.steps.push('zh files');

    // Plans: the channel's state in Chinese; a viewer's plan refused, said why.
    await page.click('[data-testid=rec-tab-plans]');
    await page.waitForSelector('[data-testid=plan-row-workdays]', { timeout: 10000 });
    await waitText(page, `[data-testid=pc-state-${chPlan}]`, '录像中', 20000);
    zh.channel_row = await text(page, `[data-testid=pc-${chPlan}]`);
    zh.plan_row = await text(page, '[data-testid=plan-row-workdays]');
    zh.form_title = await text(page, '[data-testid=pf-title]');
    await waitText(page, '[data-testid=retention]', '每');
    zh.retention = await text(page, '[data-testid=retention]');
    await page.fill('[data-testid=pf-name]', '夜间');
    await page.click('[data-testid=pf-submit]');
    await waitText(page, '[data-testid=pf-status]', '未保存');
    zh.plan_refused = await text(page, '[data-testid=pf-status]');
    zh.fits_plans = await fits(page);
    zh.words_plans = await languageProblems(page, 'zh-CN');
    await page.screenshot({ path: `${shots}/recordings-phone-zh-plans.png`, fullPage: true });
    result.steps.push('zh plans');
    // Switched to English on the page: the view follows at once.
    await page.click('[data-testid=lang-en]');
    await waitText(page, `[data-testid=pc-state-${chPlan}]`, 'recording');
    zh.switched = {
      nav: await text(page, '[data-testid=nav-recordings]'),
      plan_row: await text(page, '[data-testid=plan-row-workdays]'),
      refused: await text(page, '[data-testid=pf-status]'),
      form_title: await text(page, '[data-testid=pf-title]'),
      retention: await text(page, '[data-testid=retention]'),
      plan_words: await languageProblems(page, 'en'),
    };
    await page.click('[data-testid=rec-tab-files]');
    await waitText(page, '[data-testid=rec-note]', 'recordings of');
    zh.switched.note = await text(page, '[data-testid=rec-note]');
    zh.switched.rows = (await rowsOf(page)).map((r) => r.text);
    zh.switched.files_words = await languageProblems(page, 'en');
    await context.close();
  }
  result.ok = true;
} catch (err) {
  result.error = String(err && err.stack || err);
  for (const c of browser.contexts()) {
    for (const p of c.pages()) {
      result.timeline = await p.evaluate(() => document.querySelector('#rec-timeline').outerHTML.slice(0, 3000)).catch(() => null);
      result.rec_status = await p.evaluate(() => document.querySelector('#rec-status').textContent).catch(() => null);
    }
  }
}
await finish(browser);
