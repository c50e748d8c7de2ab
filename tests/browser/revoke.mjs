// The shopper's revoke page in a real browser: Debian's headless Chromium driven by
// playwright-core, with JavaScript switched off, as a shopper's mail client opens the
// link. Driven by tests/revoke_browser.rs over stdin/stdout:
//
//   node revoke.mjs URL --store NAME --order ORDER [--screenshot FILE.png]
//
//   stdout  GET_DONE            the page was opened (GET) and passed every check
//   stdin   CLICK | CLOSE       click the confirm button, or close like a link scanner
//                               (end of input counts as CLOSE: nothing is ever clicked
//                               unless the test says so)
//   stdout  REVOKED | CLOSED    what was done, after its checks
//   stdout  FAIL <why>          a check failed (also on stderr); exit status 1
//
// Progress goes to stderr. The page is a 390x844 phone viewport, where shoppers mostly
// read their mail. With --screenshot, FILE.png shows the question and FILE-revoked.png
// the answer to the click.

import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { chromium } from 'playwright-core';

const CHROMIUM = '/usr/bin/chromium';
// Headless, as root, on a network with no way out: without the background-networking
// flags Chromium waits on services it cannot reach. playwright-core's launch() gives the
// browser a fresh, empty temporary --user-data-dir and deletes it on close.
const CHROMIUM_ARGS = [
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];
const VIEWPORT = { width: 390, height: 844 };
// A hang guard only: every step normally takes well under a second.
const WATCHDOG_MS = 120_000;
const STEP_TIMEOUT_MS = 30_000;

class CheckFailed extends Error {}

function check(ok, what) {
  if (!ok) throw new CheckFailed(what);
  log(`ok: ${what}`);
}

function log(line) {
  process.stderr.write(`revoke.mjs: ${line}\n`);
}

function say(line) {
  process.stdout.write(`${line}\n`);
}

function fail(why) {
  const one = String(why).replace(/\s+/g, ' ').trim();
  log(`FAIL: ${one}`);
  say(`FAIL ${one}`);
  process.exit(1);
}

/// The next line on stdin, or null at end of input.
function nextLine() {
  const rl = createInterface({ input: process.stdin });
  return new Promise((resolve) => {
    let done = false;
    rl.once('line', (l) => {
      done = true;
      rl.close();
      resolve(l.trim());
    });
    rl.once('close', () => {
      if (!done) resolve(null);
    });
  });
}

/// Everything a person or an assistive technology relies on, read from the rendered page.
async function readPage(page) {
  return page.evaluate(() => {
    const parse = (c) => {
      const m = c.match(/^rgba?\(([\d.]+),\s*([\d.]+),\s*([\d.]+)(?:,\s*([\d.]+))?\)$/);
      return m ? { rgb: [m[1], m[2], m[3]].map(Number), a: m[4] === undefined ? 1 : Number(m[4]) } : null;
    };
    const luminance = ([r, g, b]) => {
      const lin = (v) => {
        v /= 255;
        return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4;
      };
      return 0.2126 * lin(r) + 0.7152 * lin(g) + 0.0722 * lin(b);
    };
    // The first opaque background up the tree; the canvas is white (the page sets no
    // color-scheme).
    const background = (el) => {
      for (let e = el; e; e = e.parentElement) {
        const c = parse(getComputedStyle(e).backgroundColor);
        if (c === null) return null;
        if (c.a === 1) return c.rgb;
      }
      return [255, 255, 255];
    };
    // WCAG 2.2 1.4.3: 4.5:1, or 3:1 for large text (24px, or 18.66px bold).
    const lowContrast = [];
    for (const el of document.body.querySelectorAll('*')) {
      const ownText = [...el.childNodes].some((n) => n.nodeType === Node.TEXT_NODE && n.textContent.trim());
      if (!ownText) continue;
      const style = getComputedStyle(el);
      const fg = parse(style.color);
      const bg = background(el);
      if (fg === null || bg === null) {
        lowContrast.push(`${el.tagName}: colours not readable (${style.color} on ${style.backgroundColor})`);
        continue;
      }
      const [hi, lo] = [luminance(fg.rgb), luminance(bg)].sort((a, b) => b - a);
      const ratio = (hi + 0.05) / (lo + 0.05);
      const size = parseFloat(style.fontSize);
      const large = size >= 24 || (size >= 18.66 && Number(style.fontWeight) >= 700);
      if (ratio < (large ? 3 : 4.5)) lowContrast.push(`${el.tagName} "${el.textContent.trim()}": ${ratio.toFixed(2)}:1`);
    }
    const inlineHandlers = [...document.querySelectorAll('*')].flatMap((el) =>
      [...el.attributes].filter((a) => a.name.startsWith('on')).map((a) => `${el.tagName}[${a.name}]`),
    );
    const forms = [...document.forms];
    const submits = [...document.querySelectorAll('button, input[type=submit], input[type=image]')].filter(
      (b) => b.type === 'submit' || b.type === 'image',
    );
    return {
      lang: document.documentElement.getAttribute('lang') ?? '',
      title: document.title.trim(),
      h1: [...document.querySelectorAll('h1')].map((h) => h.textContent.trim()),
      text: document.body.innerText.replace(/\s+/g, ' ').trim(),
      scripts: document.scripts.length,
      inlineHandlers,
      javascriptUrls: [...document.querySelectorAll('[href^="javascript:" i], [action^="javascript:" i]')].length,
      forms: forms.map((f) => ({ method: f.method, action: f.action, target: f.target })),
      submits: submits.map((b) => ({ inPostForm: b.form !== null && b.form.method === 'post', formaction: b.getAttribute('formaction') })),
      location: location.href,
      overflowX: document.documentElement.scrollWidth > window.innerWidth,
      lowContrast,
    };
  });
}

async function checkQuestionPage(page, store, order) {
  const p = await readPage(page);
  check(/^[a-z]{2,3}(-[A-Za-z0-9]+)*$/.test(p.lang), `<html lang> is set (${JSON.stringify(p.lang)})`);
  check(p.title.length > 0, `<title> is not empty (${JSON.stringify(p.title)})`);
  check(p.h1.length === 1 && p.h1[0].length > 0, `exactly one non-empty <h1> (${JSON.stringify(p.h1)})`);
  check(p.text.includes(store), `the page names the store ${JSON.stringify(store)} (text: ${JSON.stringify(p.text)})`);
  check(p.text.includes(order), `the page names the order ${JSON.stringify(order)} (text: ${JSON.stringify(p.text)})`);
  check(p.scripts === 0, `no <script> elements (found ${p.scripts})`);
  check(p.inlineHandlers.length === 0, `no inline event handlers (${p.inlineHandlers.join(', ') || 'none'})`);
  check(p.javascriptUrls === 0, `no javascript: URLs (found ${p.javascriptUrls})`);
  check(p.forms.length === 1, `exactly one form (found ${p.forms.length})`);
  const [form] = p.forms;
  check(form.method === 'post', `the form is method="post" (is ${JSON.stringify(form.method)})`);
  check(form.action === p.location, `the form posts back to the page's own URL (action ${form.action})`);
  check(form.target === '', `the form opens no other window (target ${JSON.stringify(form.target)})`);
  check(p.submits.length === 1, `exactly one submit button (found ${p.submits.length})`);
  check(p.submits[0].inPostForm && p.submits[0].formaction === null, 'the submit button submits the POST form');
  check(!p.overflowX, `nothing scrolls sideways at ${VIEWPORT.width}px wide`);
  check(p.lowContrast.length === 0, `text contrast meets WCAG 1.4.3 (${p.lowContrast.join('; ') || 'all pass'})`);

  // What assistive technology sees: the button by role, with a name (Chromium's
  // accessibility tree, through Playwright's ARIA snapshot).
  const button = page.getByRole('button');
  check((await button.count()) === 1, 'exactly one button in the accessibility tree');
  const aria = (await button.ariaSnapshot()).trim();
  const name = aria.match(/^- button "(.+)"/)?.[1] ?? '';
  check(name.trim().length > 0, `the button has an accessible name (${JSON.stringify(aria)})`);
  check(await button.isVisible(), 'the button is visible');
  check(await button.isEnabled(), 'the button is enabled');
  const box = await button.boundingBox();
  check(
    box !== null && box.x >= 0 && box.x + box.width <= VIEWPORT.width && box.y >= 0 && box.y + box.height <= VIEWPORT.height,
    `the button is on the first screen of a phone (${JSON.stringify(box)})`,
  );
  // WCAG 2.2 2.5.8: targets at least 24 by 24 CSS pixels.
  check(box.width >= 24 && box.height >= 24, `the button is at least 24x24 px (${box.width}x${box.height})`);
  await page.keyboard.press('Tab');
  check(
    await button.evaluate((b) => document.activeElement === b),
    'the first Tab from the top of the page reaches the button',
  );
  return { button, name };
}

async function main() {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      store: { type: 'string' },
      order: { type: 'string' },
      screenshot: { type: 'string' },
    },
  });
  const [url] = positionals;
  if (positionals.length !== 1 || !values.store || !values.order) {
    fail('usage: node revoke.mjs URL --store NAME --order ORDER [--screenshot FILE.png]');
  }
  const { store, order, screenshot } = values;
  setTimeout(() => fail(`no end after ${WATCHDOG_MS / 1000} s: stuck`), WATCHDOG_MS).unref();

  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    chromiumSandbox: false,
    args: CHROMIUM_ARGS,
    timeout: STEP_TIMEOUT_MS * 2,
  });
  log(`${CHROMIUM} ${browser.version()}`);
  try {
    const context = await browser.newContext({ javaScriptEnabled: false, viewport: VIEWPORT, locale: 'en-US' });
    context.setDefaultTimeout(STEP_TIMEOUT_MS);
    const page = await context.newPage();
    // The link holds the revoke token: a page that loaded anything from elsewhere would
    // hand the token to that host in the Referer.
    const requests = [];
    page.on('request', (r) => requests.push(`${r.method()} ${r.url()}`));

    const got = await page.goto(url, { waitUntil: 'load' });
    check(got !== null && got.status() === 200, `GET ${url} answers 200 (${got?.status()})`);
    check(
      /^text\/html;\s*charset=utf-8$/i.test(got.headers()['content-type'] ?? ''),
      `the page is text/html; charset=utf-8 (${got.headers()['content-type']})`,
    );
    const { button, name } = await checkQuestionPage(page, store, order);
    check(
      requests.length === 1 && requests[0] === `GET ${url}`,
      `the page loads nothing but itself (${requests.join(', ')})`,
    );
    if (screenshot) {
      await page.screenshot({ path: screenshot, fullPage: true });
      log(`screenshot of the question: ${screenshot}`);
    }

    say('GET_DONE');
    const command = await nextLine();
    if (command === null || command === 'CLOSE') {
      await context.close();
      say('CLOSED');
      return;
    }
    check(command === 'CLICK', `stdin says CLICK or CLOSE (said ${JSON.stringify(command)})`);

    const [answer] = await Promise.all([
      page.waitForResponse((r) => r.request().method() === 'POST'),
      button.click(),
    ]);
    await page.waitForLoadState('load');
    check(answer.url() === url && answer.status() === 200, `clicking "${name}" POSTs to the link and gets 200 (${answer.status()} ${answer.url()})`);
    const done = await readPage(page);
    check(done.h1.length === 1 && /switched off/i.test(done.h1[0]), `the answer's <h1> says switched off (${JSON.stringify(done.h1)})`);
    check(done.text.includes(store) && done.text.includes(order), `the answer names store and order (${JSON.stringify(done.text)})`);
    check(done.forms.length === 0, 'the answer has no form left to submit');
    check(done.lowContrast.length === 0, `answer text contrast meets WCAG 1.4.3 (${done.lowContrast.join('; ') || 'all pass'})`);
    if (screenshot) {
      const after = screenshot.replace(/(\.png)?$/i, '-revoked.png');
      await page.screenshot({ path: after, fullPage: true });
      log(`screenshot of the answer: ${after}`);
    }

    // Opening the link again (the shopper clicks it in an older mail) says so and asks
    // nothing.
    const again = await context.newPage();
    const reopened = await again.goto(url, { waitUntil: 'load' });
    const later = await readPage(again);
    check(reopened.status() === 200 && /already switched off/i.test(later.title), `the link opened again says already switched off (${JSON.stringify(later.title)})`);
    check(later.forms.length === 0, 'the link opened again has no form');
    await context.close();
    say('REVOKED');
  } finally {
    await browser.close();
  }
}

main().then(
  () => process.exit(0),
  (e) => fail(e instanceof CheckFailed ? e.message : (e?.stack ?? e)),
);
