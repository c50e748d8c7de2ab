// The shopper's page in a real browser: Debian's headless Chromium driven by
// playwright-core, with JavaScript switched off, as a shopper's mail client opens the
// link. Driven by tests/revoke_browser.rs over stdin/stdout:
//
//   node revoke.mjs URL --accept-language TAGS [--forbid TEXT]... [--screenshots PREFIX]
//
//   stdout  PAGE <json>          the page was opened (GET) and passed every check; json is
//                                {h1, title, lang, text, buttons: [{action, name}]}
//   stdin   CLICK <action> [n]   click the n-th (0-based) button of that action, e.g.
//                                `CLICK revoke`, `CLICK revoke_other 1`, `CLICK revoke_all`
//           OPEN                 open the link again (GET), as from an older mail
//           CLOSE                close like a link scanner (end of input counts as CLOSE:
//                                nothing is ever clicked unless the test says so)
//   stdout  PAGE <json>          after CLICK or OPEN, the new page, checked the same way
//           CLOSED               after CLOSE
//           FAIL <why>           a check failed (also on stderr); exit status 1
//
// Every page is checked as a shopper and a screen reader meet it: language, one <h1>, no
// script, forms that POST back to the page, named buttons big enough to tap, WCAG
// contrast, nothing loaded from elsewhere, none of the --forbid strings (real addresses)
// anywhere in the HTML. With --screenshots, each page is saved as PREFIX-<n>.png and the
// picture is checked not to be blank (decoded in a separate JavaScript-enabled page).
// Progress goes to stderr. The viewport is a 390x844 phone.

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
const WATCHDOG_MS = 150_000;
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

/// Lines of stdin, one at a time; null at end of input.
const lines = (() => {
  const rl = createInterface({ input: process.stdin });
  const queue = [];
  const waiting = [];
  let closed = false;
  rl.on('line', (l) => (waiting.length ? waiting.shift()(l.trim()) : queue.push(l.trim())));
  rl.on('close', () => {
    closed = true;
    while (waiting.length) waiting.shift()(null);
  });
  return () =>
    new Promise((resolve) => {
      if (queue.length) resolve(queue.shift());
      else if (closed) resolve(null);
      else waiting.push(resolve);
    });
})();

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
    const submits = [...document.querySelectorAll('button, input[type=submit], input[type=image]')].filter(
      (b) => b.type === 'submit' || b.type === 'image',
    );
    return {
      lang: document.documentElement.getAttribute('lang') ?? '',
      title: document.title.trim(),
      h1: [...document.querySelectorAll('h1')].map((h) => h.textContent.trim()),
      text: document.body.innerText.replace(/\s+/g, ' ').trim(),
      html: document.documentElement.outerHTML,
      scripts: document.scripts.length,
      inlineHandlers,
      javascriptUrls: [...document.querySelectorAll('[href^="javascript:" i], [action^="javascript:" i]')].length,
      forms: [...document.forms].map((f) => ({ method: f.method, action: f.action, target: f.target })),
      submits: submits.map((b) => ({
        action: b.value,
        inPostForm: b.form !== null && b.form.method === 'post',
        formaction: b.getAttribute('formaction'),
      })),
      location: location.href,
      overflowX: document.documentElement.scrollWidth > window.innerWidth,
      lowContrast,
    };
  });
}

/// A screenshot is not blank: decoded in a JavaScript-enabled page of its own (the page
/// under test has JavaScript off), at least 0.5% of its pixels differ clearly from the
/// top-left corner and it has more than two colours.
async function checkNotBlank(browser, png, path) {
  const context = await browser.newContext({ javaScriptEnabled: true });
  const page = await context.newPage();
  const stats = await page.evaluate(async (b64) => {
    const img = new Image();
    img.src = `data:image/png;base64,${b64}`;
    await img.decode();
    const canvas = document.createElement('canvas');
    canvas.width = img.width;
    canvas.height = img.height;
    const g = canvas.getContext('2d');
    g.drawImage(img, 0, 0);
    const d = g.getImageData(0, 0, canvas.width, canvas.height).data;
    const [r0, g0, b0] = [d[0], d[1], d[2]];
    let differ = 0;
    const colours = new Set();
    for (let i = 0; i < d.length; i += 4) {
      if (Math.abs(d[i] - r0) + Math.abs(d[i + 1] - g0) + Math.abs(d[i + 2] - b0) > 60) differ++;
      if (colours.size < 256) colours.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]);
    }
    return { width: img.width, height: img.height, differ, pixels: d.length / 4, colours: colours.size };
  }, png.toString('base64'));
  await context.close();
  check(
    stats.width >= VIEWPORT.width && stats.differ / stats.pixels > 0.005 && stats.colours > 2,
    `screenshot ${path} is not blank (${JSON.stringify(stats)})`,
  );
}

async function checkPage(page, requests, url, forbid) {
  const p = await readPage(page);
  check(/^[a-z]{2,3}(-[A-Za-z0-9]+)*$/.test(p.lang), `<html lang> is set (${JSON.stringify(p.lang)})`);
  check(p.title.length > 0, `<title> is not empty (${JSON.stringify(p.title)})`);
  check(p.h1.length === 1 && p.h1[0].length > 0, `exactly one non-empty <h1> (${JSON.stringify(p.h1)})`);
  check(p.scripts === 0, `no <script> elements (found ${p.scripts})`);
  check(p.inlineHandlers.length === 0, `no inline event handlers (${p.inlineHandlers.join(', ') || 'none'})`);
  check(p.javascriptUrls === 0, `no javascript: URLs (found ${p.javascriptUrls})`);
  for (const f of p.forms) {
    check(f.method === 'post', `every form is method="post" (${JSON.stringify(f.method)})`);
    check(f.action === p.location, `every form posts back to the page's own URL (action ${f.action})`);
    check(f.target === '', `no form opens another window (target ${JSON.stringify(f.target)})`);
  }
  check(p.submits.length === p.forms.length, `one submit button per form (${p.submits.length} for ${p.forms.length})`);
  check(p.submits.every((s) => s.inPostForm && s.formaction === null), 'every submit button submits its POST form');
  check(!p.overflowX, `nothing scrolls sideways at ${VIEWPORT.width}px wide`);
  check(p.lowContrast.length === 0, `text contrast meets WCAG 1.4.3 (${p.lowContrast.join('; ') || 'all pass'})`);
  for (const f of forbid) {
    check(!p.html.toLowerCase().includes(f.toLowerCase()), `the page never shows ${JSON.stringify(f)}`);
  }
  check(
    requests.length === 1 && requests[0].startsWith(`${requests[0].split(' ')[0]} ${url.split('?')[0]}`),
    `the page loads nothing but itself (${requests.join(', ')})`,
  );

  // What assistive technology sees: every button by role, with a name; big enough to tap.
  const buttons = page.getByRole('button');
  const n = await buttons.count();
  check(n === p.submits.length, `every submit button is in the accessibility tree (${n})`);
  const named = [];
  for (let i = 0; i < n; i++) {
    const b = buttons.nth(i);
    const aria = (await b.ariaSnapshot()).trim();
    // `- button "Name"`, YAML-quoted as a whole when the name holds a colon.
    const name = aria.match(/button "((?:[^"\\]|\\.)*)"/)?.[1] ?? '';
    check(name.trim().length > 0, `button ${i} has an accessible name (${JSON.stringify(aria)})`);
    check((await b.isVisible()) && (await b.isEnabled()), `button "${name}" is visible and enabled`);
    const box = await b.boundingBox();
    // WCAG 2.2 2.5.8: targets at least 24 by 24 CSS pixels, inside the phone's width.
    check(box !== null && box.width >= 24 && box.height >= 24, `button "${name}" is at least 24x24 px (${JSON.stringify(box)})`);
    check(box.x >= 0 && box.x + box.width <= VIEWPORT.width, `button "${name}" fits the screen's width`);
    named.push({ action: p.submits[i].action, name });
  }
  if (n > 0) {
    const first = buttons.first();
    const box = await first.boundingBox();
    check(box.y + box.height <= VIEWPORT.height, `the first button is on the first screen of a phone (${JSON.stringify(box)})`);
    await page.keyboard.press('Tab');
    check(await first.evaluate((b) => document.activeElement === b), 'the first Tab from the top reaches the first button');
  }
  return { h1: p.h1[0], title: p.title, lang: p.lang, text: p.text, buttons: named };
}

async function main() {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      'accept-language': { type: 'string' },
      forbid: { type: 'string', multiple: true },
      screenshots: { type: 'string' },
    },
  });
  const [url] = positionals;
  if (positionals.length !== 1 || !values['accept-language']) {
    fail('usage: node revoke.mjs URL --accept-language TAGS [--forbid TEXT]... [--screenshots PREFIX]');
  }
  const forbid = values.forbid ?? [];
  setTimeout(() => fail(`no end after ${WATCHDOG_MS / 1000} s: stuck`), WATCHDOG_MS).unref();

  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    chromiumSandbox: false,
    args: CHROMIUM_ARGS,
    timeout: STEP_TIMEOUT_MS * 2,
  });
  log(`${CHROMIUM} ${browser.version()}`);
  let shots = 0;
  try {
    const locale = values['accept-language'].split(',')[0].split(';')[0];
    const context = await browser.newContext({
      javaScriptEnabled: false,
      viewport: VIEWPORT,
      locale,
      extraHTTPHeaders: { 'Accept-Language': values['accept-language'] },
    });
    context.setDefaultTimeout(STEP_TIMEOUT_MS);
    let page = await context.newPage();
    // The link holds the token: a page that loaded anything from elsewhere would hand it
    // to that host in the Referer.
    let requests = [];
    const watch = (p) => p.on('request', (r) => requests.push(`${r.method()} ${r.url()}`));
    watch(page);

    const report = async (response, what) => {
      check(response !== null && response.status() === 200, `${what} answers 200 (${response?.status()})`);
      check(
        /^text\/html;\s*charset=utf-8$/i.test(response.headers()['content-type'] ?? ''),
        `${what} is text/html; charset=utf-8 (${response.headers()['content-type']})`,
      );
      const summary = await checkPage(page, requests, url, forbid);
      if (values.screenshots) {
        const path = `${values.screenshots}-${shots++}.png`;
        const png = await page.screenshot({ path, fullPage: true });
        await checkNotBlank(browser, png, path);
        log(`screenshot: ${path}`);
      }
      say(`PAGE ${JSON.stringify(summary)}`);
    };

    requests = [];
    await report(await page.goto(url, { waitUntil: 'load' }), `GET ${url}`);
    for (;;) {
      const command = await lines();
      if (command === null || command === 'CLOSE') {
        await context.close();
        say('CLOSED');
        return;
      }
      if (command === 'OPEN') {
        page = await context.newPage();
        watch(page);
        requests = [];
        await report(await page.goto(url, { waitUntil: 'load' }), `GET ${url} again`);
        continue;
      }
      const [verb, action, nth] = command.split(/\s+/);
      check(verb === 'CLICK' && action, `stdin says CLICK <action>, OPEN or CLOSE (said ${JSON.stringify(command)})`);
      const button = page.locator(`button[name="intent"][value="${action}"]`).nth(Number(nth ?? 0));
      check((await button.count()) === 1, `there is a ${action} button number ${nth ?? 0}`);
      requests = [];
      const [answer] = await Promise.all([
        page.waitForResponse((r) => r.request().method() === 'POST'),
        button.click(),
      ]);
      await page.waitForLoadState('load');
      check(answer.url() === page.url(), `the ${action} button POSTs to the page's own URL (${answer.url()})`);
      await report(answer, `POST ${action}`);
    }
  } finally {
    await browser.close();
  }
}

main().then(
  () => process.exit(0),
  (e) => fail(e instanceof CheckFailed ? e.message : (e?.stack ?? e)),
);
