// Plays a gmv HLS URL with hls.js in headless Chromium; prints JSON {ok, width, height, time}.
// Usage: node hls_check.mjs PAGE_URL   (the page is served by the Rust test)
import { chromium } from 'playwright-core';

const page_url = process.argv[2];
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
         '--disable-component-update', '--disable-sync', '--autoplay-policy=no-user-gesture-required'],
});
let result;
try {
  const page = await browser.newPage();
  page.on('console', (m) => console.error('page:', m.text()));
  await page.goto(page_url);
  await page.waitForFunction(() => window.result !== undefined, null, { timeout: 40000 });
  result = await page.evaluate(() => window.result);
} catch (e) {
  result = { ok: false, error: String(e) };
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
process.exit(result.ok ? 0 : 1);
