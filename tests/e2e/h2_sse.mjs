// Event streams over HTTP/2 in a real headless Chromium (run by
// crates/push-server/tests/tls.rs, which makes the certificate and starts
// two push-servers: one with --tls-cert, one without):
//
//   node tests/e2e/h2_sse.mjs --chromium chromium --spki BASE64 \
//        --https https://127.0.0.1:PORT --http http://127.0.0.1:PORT
//
// (NODE_PATH must reach playwright-core: target/third-party/node_modules.)
//
// 1. Over TLS, ALPN gives HTTP/2: a page opens ten EventSources to its own
//    origin, all ten open, and each gets every message published, in order.
// 2. Over plain HTTP/1.1 the same page gets six open streams: Chromium allows
//    six connections per origin, and an event stream holds its connection.
//    The other four are still connecting once the six have every message.
//
// Chromium trusts the test's certificate by its public key only
// (--ignore-certificate-errors-spki-list), not every certificate.
// Every wait is on a condition with a generous timeout as a safety net.

import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const { chromium } = require('playwright-core');

const PATIENCE = 30_000;
const STREAMS = 10;
const MESSAGES = 3;

const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, arg, i, all) => {
    if (arg.startsWith('--')) pairs.push([arg.slice(2), all[i + 1]]);
    return pairs;
  }, []),
);
if (!args.chromium || !args.https || !args.http || !args.spki) {
  console.error('usage: h2_sse.mjs --chromium PATH --spki HASH --https URL --http URL');
  process.exit(2);
}

let failures = 0;
function check(ok, what) {
  console.log(`${ok ? 'PASS' : 'FAIL'} ${what}`);
  if (!ok) failures += 1;
  return ok;
}

/** Publishes from Node: for the plain server, whose six connections the page holds. */
async function publishFromNode(base, channel, data) {
  const response = await fetch(`${base}/pub/${channel}`, { method: 'POST', body: data });
  if (!response.ok) throw new Error(`publish answered ${response.status}`);
}

/** Opens `count` EventSources on `channel` in the page; they record what they get. */
async function openStreams(page, channel, count) {
  await page.evaluate(
    ({ channel, count }) => {
      window.streams = [];
      for (let i = 0; i < count; i += 1) {
        const source = new EventSource(`/sse/${channel}`);
        const stream = { source, opened: false, data: [] };
        source.onopen = () => {
          stream.opened = true;
        };
        source.onmessage = (event) => stream.data.push(event.data);
        window.streams.push(stream);
      }
    },
    { channel, count },
  );
}

/** Publishes from the page (same origin: the browser trusts it). */
async function publishFromPage(page, channel, data) {
  const status = await page.evaluate(
    async ({ channel, data }) => (await fetch(`/pub/${channel}`, { method: 'POST', body: data })).status,
    { channel, data },
  );
  if (status !== 200) throw new Error(`publish answered ${status}`);
}

async function waitInPage(page, predicate, arg, what) {
  try {
    await page.waitForFunction(predicate, arg, { timeout: PATIENCE, polling: 50 });
    return true;
  } catch (err) {
    check(false, `${what} (${err.message.split('\n')[0]})`);
    return false;
  }
}

const browser = await chromium.launch({
  executablePath: args.chromium,
  headless: true,
  args: [
    '--no-sandbox',
    '--disable-dev-shm-usage',
    `--ignore-certificate-errors-spki-list=${args.spki}`,
  ],
});

try {
  // 1. HTTP/2 over TLS: ten streams, every message on each.
  {
    const page = await browser.newPage();
    page.on('pageerror', (err) => check(false, `no error in the page: ${err.message}`));
    // Any page of the origin will do (not the demo: it opens streams of its own).
    const response = await page.goto(`${args.https}/healthz`);
    check(response.ok(), `the page loads over TLS (status ${response.status()})`);
    const protocol = await page.evaluate(() => performance.getEntriesByType('navigation')[0].nextHopProtocol);
    check(protocol === 'h2', `ALPN chose HTTP/2 (nextHopProtocol ${protocol})`);
    await openStreams(page, 'h2', STREAMS);
    await waitInPage(page, (n) => window.streams.filter((s) => s.opened).length === n, STREAMS, `all ${STREAMS} streams to open`);
    const sent = [];
    for (let i = 0; i < MESSAGES; i += 1) {
      const data = `h2 message ${i}`;
      await publishFromPage(page, 'h2', data);
      sent.push(data);
    }
    const allGot = await waitInPage(
      page,
      (sent) => window.streams.every((s) => s.data.length >= sent.length),
      sent,
      `every stream to get all ${MESSAGES} messages`,
    );
    const got = await page.evaluate(() => window.streams.map((s) => s.data));
    const exact = got.every((data) => data.length === sent.length && data.every((d, i) => d === sent[i]));
    check(allGot && exact && got.length === STREAMS, `ten event streams over HTTP/2, each got every message in order, once`);
    await page.close();
  }

  // 2. HTTP/1.1 (plain): six open, four left connecting.
  {
    const page = await browser.newPage();
    page.on('pageerror', (err) => check(false, `no error in the page: ${err.message}`));
    await page.goto(`${args.http}/healthz`);
    const protocol = await page.evaluate(() => performance.getEntriesByType('navigation')[0].nextHopProtocol);
    check(protocol === 'http/1.1', `plain HTTP is HTTP/1.1 (nextHopProtocol ${protocol})`);
    await openStreams(page, 'h1', STREAMS);
    await waitInPage(page, () => window.streams.filter((s) => s.opened).length === 6, null, 'six streams to open');
    // A publish from the page would wait for a seventh connection too.
    await publishFromNode(args.http, 'h1', 'h1 message');
    await waitInPage(
      page,
      () => window.streams.filter((s) => s.data.includes('h1 message')).length === 6,
      null,
      'the six open streams to get the message',
    );
    const states = await page.evaluate(() =>
      window.streams.map((s) => ({ opened: s.opened, got: s.data.length, readyState: s.source.readyState })),
    );
    const waiting = states.filter((s) => !s.opened && s.got === 0 && s.readyState === 0 /* CONNECTING */);
    check(
      states.filter((s) => s.opened).length === 6 && waiting.length === STREAMS - 6,
      `over HTTP/1.1 only six of ten streams open (the other four still connecting: ${JSON.stringify(states)})`,
    );
    await page.close();
  }
} finally {
  await browser.close();
}

if (failures > 0) {
  console.log(`${failures} check(s) failed`);
  process.exit(1);
}
console.log('all browser checks passed');
