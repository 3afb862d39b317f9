// The web page in a real browser: Debian's chromium, driven by playwright-core
// (no downloaded browser). Picks examples/shapes-1.png, waits for the caption,
// asks a question and waits for the streamed answer, scores typed texts,
// searches the index run.sh built, and saves a screenshot to $BLIP2_ARTIFACTS/web.png. run.sh starts the server
// (with an API key) and passes BLIP2_URL, BLIP2_API_KEY, BLIP2_SOURCE_DIR.
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { chromium } from 'playwright-core';

import { serverFromEnv } from './env.mjs';

const { url, apiKey, sourceDir, artifacts } = serverFromEnv();
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const shapes = join(sourceDir, 'examples/shapes-1.png');
const generation = { timeout: 120_000 };

let profile;
let context;
let page;
const pageErrors = [];

before(async () => {
  profile = mkdtempSync(join(tmpdir(), 'blip2-chromium-'));
  // launchPersistentContext is how playwright takes a --user-data-dir: a fresh one per run.
  context = await chromium.launchPersistentContext(profile, {
    executablePath,
    headless: true,
    viewport: { width: 1100, height: 900 },
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--disable-dev-shm-usage'],
  });
  page = context.pages()[0] || await context.newPage();
  page.on('pageerror', (err) => pageErrors.push(String(err)));
  page.on('console', (msg) => { if (msg.type() === 'error') pageErrors.push(msg.text()); });
});

after(async () => {
  if (context) await context.close();
  if (profile) rmSync(profile, { recursive: true, force: true });
});

test('the page loads from GET / and reads /health', async () => {
  await page.goto(`${url}/`);
  assert.equal(await page.title(), 'blip2cpp');
  await page.getByRole('status').filter({ hasText: 'ready' }).waitFor();
  // The shapes servers of run.sh have a generation model and retrieval heads.
  await page.getByRole('heading', { name: 'Match texts' }).waitFor();
  assert.equal(await page.getByLabel('Your question about the image').isDisabled(), true,
    'the question box should wait for an image');
});

test('without the API key the page says so in plain words', { skip: !apiKey && 'the server has no API key' },
  async () => {
    await page.getByLabel('Drop an image here, or choose a file').setInputFiles(shapes);
    const alert = page.getByRole('alert');
    await alert.waitFor();
    assert.match(await alert.innerText(), /needs an API key/);
    assert.equal(await page.locator('#caption').getAttribute('data-state'), 'error');
    // The settings open so the key can be typed in.
    assert.equal(await page.locator('details.settings').getAttribute('open'), '');
    await page.getByRole('button', { name: 'Dismiss the message' }).click();
    assert.equal(await alert.isHidden(), true);
    // Typing the key ('change' fires on leaving the box) asks for the refused caption again.
    await page.getByLabel('API key').fill(apiKey);
    await page.getByLabel('API key').press('Tab');
    await page.locator('#caption[data-state="done"]').waitFor(generation);
    assert.equal(await alert.isHidden(), true);
  });

test('a text file is turned away by the page before it reaches the server', async () => {
  await page.locator('#image-input').setInputFiles({
    name: 'notes.txt', mimeType: 'text/plain', buffer: Buffer.from('hello'),
  });
  const alert = page.getByRole('alert');
  await alert.waitFor();
  assert.equal(await alert.locator('#error-text').innerText(),
    '"notes.txt" is not an image; the server reads PNG, JPEG and WebP images.');
});

test('a corrupt image gets the server\'s refusal in plain words', async () => {
  await page.locator('#image-input').setInputFiles({
    name: 'broken.png', mimeType: 'image/png', buffer: Buffer.from('this is not a PNG file at all'),
  });
  const alert = page.getByRole('alert');
  await alert.waitFor();
  const text = await alert.innerText();
  assert.match(text, /^The server could not use this request\. \(The server said: .+\)/);
  assert.equal(await page.locator('#caption').getAttribute('data-state'), 'error');
});

test('dropping an image on the drop zone captions it', async () => {
  const dataTransfer = await page.evaluateHandle((base64) => {
    const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
    const transfer = new DataTransfer();
    transfer.items.add(new File([bytes], 'dropped.png', { type: 'image/png' }));
    return transfer;
  }, readFileSync(shapes).toString('base64'));
  await page.dispatchEvent('#drop-zone', 'dragover', { dataTransfer });
  await page.dispatchEvent('#drop-zone', 'drop', { dataTransfer });
  await page.getByAltText('The picked image, dropped.png').waitFor();
  await page.locator('#caption[data-state="done"]').waitFor(generation);
  assert.match(await page.locator('#image-name').innerText(), /^dropped\.png · /);
  assert.equal(await page.getByRole('alert').isHidden(), true);
});

test('picking an image shows a preview and its caption', async () => {
  await page.locator('#image-input').setInputFiles(shapes);
  await page.getByAltText('The picked image, shapes-1.png').waitFor();
  const caption = page.locator('#caption[data-state="done"]');
  await caption.waitFor(generation);
  const text = (await caption.innerText()).trim();
  assert.ok(text.length > 0, 'empty caption');
  assert.ok(!text.startsWith('('), `no real caption: ${text}`);
  assert.match(await page.locator('#caption-timing').innerText(), /\d+ ms/);
  assert.equal(await page.getByRole('alert').isHidden(), true);
});

test('a question gets a streamed answer in the chat list', async () => {
  const box = page.getByLabel('Your question about the image');
  await box.fill('what color is the star?');
  await page.getByRole('button', { name: 'Ask' }).click();
  const turn = page.locator('#chat li.turn').last();
  assert.equal(await turn.locator('.question').innerText(), 'what color is the star?');
  const answer = turn.locator('.answer[data-state="done"]');
  await answer.waitFor(generation);
  const text = (await answer.innerText()).trim();
  assert.ok(text.length > 0 && text !== '(no answer)', `no answer: ${text}`);
  // The page asks for greedy decoding, which streams token by token.
  const chunks = Number(await answer.getAttribute('data-chunks'));
  assert.ok(chunks >= 1, 'the answer did not arrive through the stream');
  if (text.split(/\s+/).length >= 2) assert.ok(chunks >= 2, `"${text}" arrived in one piece, not streamed`);
  assert.equal(await box.inputValue(), '', 'the question box should be cleared');
});

test('typed texts get match bars with the ITM probability and ITC cosine', async () => {
  // The first text is true of shapes-1.png, the second is false.
  const truth = 'a small blue triangle to the right of a large purple star';
  await page.getByLabel('Texts to score against the image, one per line').fill(`${truth}\na red star`);
  await page.getByRole('button', { name: 'Score' }).click();
  const results = page.locator('#match-results[data-state="done"]');
  await results.waitFor(generation);
  const rows = results.locator('li.score');
  assert.equal(await rows.count(), 2);
  assert.equal(await rows.nth(0).locator('.score-text').innerText(), truth);
  assert.equal(await rows.nth(1).locator('.score-text').innerText(), 'a red star');
  const percent = [];
  for (let i = 0; i < 2; i += 1) {
    const meters = rows.nth(i).getByRole('meter');
    assert.equal(await meters.count(), 2);
    const match = (await meters.nth(0).getAttribute('aria-label')).match(/^Match: (\d+(?:\.\d)?)%$/);
    assert.ok(match, 'the match bar should be labelled with its percentage');
    percent.push(Number(match[1]));
    assert.match(await meters.nth(1).getAttribute('aria-label'), /^Similarity: -?\d\.\d{3}$/);
  }
  assert.ok(percent[0] > 50 && percent[1] < 50, `true text ${percent[0]}%, false text ${percent[1]}%`);
});

test('the search box finds indexed images by text and by the picked image', async () => {
  await page.getByRole('heading', { name: 'Search the collection' }).waitFor();
  await page.getByLabel('Describe the images to find').fill('a red star');
  await page.getByLabel('Number of results').fill('3');
  await page.getByRole('button', { name: 'Search', exact: true }).click();
  const results = page.locator('#search-results[data-state="done"]');
  await results.waitFor(generation);
  assert.equal(await results.locator('li').count(), 3);
  assert.match(await results.locator('li .path').first().innerText(), /\.png$/);
  assert.match(await results.locator('li').first().innerText(), /score -?\d\.\d{3}/);

  await page.evaluate(() => { document.getElementById('search-results').dataset.state = ''; });
  await page.getByRole('button', { name: 'Find images like the current one' }).click();
  await results.waitFor(generation);
  assert.equal(await results.locator('li').count(), 3);
  assert.equal(await page.getByRole('alert').isHidden(), true);

  mkdirSync(artifacts, { recursive: true });
  await page.screenshot({ path: join(artifacts, 'web.png'), fullPage: true });
});

test('the filled-in page passes axe-core\'s WCAG 2 A and AA checks, light and dark', async () => {
  const axe = createRequire(import.meta.url).resolve('axe-core/axe.min.js');
  await page.addScriptTag({ path: axe });
  for (const colorScheme of ['light', 'dark']) {
    await page.emulateMedia({ colorScheme });
    const { violations, passes } = await page.evaluate(async () => {
      const result = await window.axe.run(document, { runOnly: ['wcag2a', 'wcag2aa'] });
      return {
        passes: result.passes.length,
        violations: result.violations.map((v) => `${v.id} (${v.impact}): ${v.help} at `
          + v.nodes.map((n) => n.target.join(' ')).join(', ')),
      };
    });
    assert.deepEqual(violations, [], `${colorScheme} scheme`);
    assert.ok(passes >= 10, `axe ran only ${passes} passing checks`);
  }
  await page.emulateMedia({ colorScheme: 'dark' });
  await page.screenshot({ path: join(artifacts, 'web-dark.png'), fullPage: true });
  await page.emulateMedia({ colorScheme: 'light' });
});

test('the page raised no script errors', () => {
  // 401s from the no-key step are logged by Chromium as failed resources, not script errors.
  const scriptErrors = pageErrors.filter((e) => !/Failed to load resource/.test(e));
  assert.deepEqual(scriptErrors, []);
});
