// Drives the console's Nodes view in headless Chromium on a control (node.role control): both
// media nodes listed up with their load, then media NODE drained with its button. A screenshot
// goes to SHOTS_DIR.
// Usage: node nodes_check.mjs CONSOLE_URL API_KEY NODE ; prints JSON {ok, control, rows, ...}
import { chromium } from 'playwright-core';

const [url, key, drained] = process.argv.slice(2);
const shots = process.env.SHOTS_DIR || '.';
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
         '--disable-component-update', '--disable-sync'],
});
const result = { ok: false };
try {
  // English (the strings checked below are the English ones), whatever the machine's language.
  const page = await browser.newPage({ viewport: { width: 1280, height: 720 }, locale: 'en-US' });
  page.on('console', (m) => console.error('page:', m.text()));
  await page.goto(url);
  await page.fill('[data-testid=key]', key);
  await page.click('[data-testid=signin-button]');
  await page.waitForSelector('[data-testid=view-devices]:not([hidden])', { timeout: 15000 });
  await page.click('nav button[data-view=nodes]');
  await page.waitForFunction(() => document.querySelectorAll('[data-testid=node-rows] tr').length >= 2
    && [...document.querySelectorAll('[data-testid=node-rows] td.state')].every((td) => td.textContent === 'up'), null, { timeout: 15000 });
  result.control = await page.textContent('[data-testid=control-state]');
  result.rows = await page.evaluate(() => [...document.querySelectorAll('[data-testid=node-rows] tr')].map((tr) => [...tr.cells].slice(0, 8).map((c) => c.textContent)));
  await page.click(`[data-testid=drain-${drained}]`);
  await page.waitForFunction((id) => document.querySelector(`[data-testid=node-state-${id}]`).textContent === 'up, draining', drained, { timeout: 10000 });
  result.drained = await page.textContent(`[data-testid=node-state-${drained}]`);
  await page.screenshot({ path: `${shots}/console-nodes.png` });
  result.ok = true;
} catch (err) {
  result.error = String(err && err.stack || err);
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
