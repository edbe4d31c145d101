// The browser tests (`cargo xtask e2e`): push-server's demo page and push.js
// in a real headless Chromium, driven by playwright-core.
//
//   node tests/e2e/demo.mjs --server target/debug/push-server \
//        --chromium chromium [--screenshot docs/demo.png]
//
// (NODE_PATH must reach playwright-core: target/third-party/node_modules.)
//
// 1. The demo page: its four panels, one per technique, each get every
//    published message, in order, once; then a screenshot.
// 2. Fallback: with WebSockets off on the server, push.js's default order
//    falls back and still gets everything.
// 3. Drops: every browser connection is cut mid-stream (a TCP proxy between
//    browser and server), messages are published while they are down, and
//    each technique resumes from its cursor: nothing lost, nothing twice.
// 4. Who is watching: the demo page counts connections by technique, and
//    with subscriber tokens names the users: a second viewer's join shows
//    on the first viewer's page.
//
// Every wait is on a condition with a generous timeout as a safety net.

import { spawn } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { once } from 'node:events';
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import net from 'node:net';
import { createInterface } from 'node:readline';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const { chromium } = require('playwright-core');

const PATIENCE = 30_000;
const TECHNIQUES = ['ws', 'sse', 'longpoll', 'poll'];

const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, arg, i, all) => {
    if (arg.startsWith('--')) pairs.push([arg.slice(2), all[i + 1]]);
    return pairs;
  }, []),
);
if (!args.server || !args.chromium) {
  console.error('usage: demo.mjs --server PATH --chromium PATH [--screenshot FILE]');
  process.exit(2);
}

let failures = 0;
function check(ok, what) {
  console.log(`${ok ? 'PASS' : 'FAIL'} ${what}`);
  if (!ok) failures += 1;
  return ok;
}

/** Starts push-server on a free port; resolves once it says where. */
async function startServer(extra = []) {
  const child = spawn(
    args.server,
    ['--listen', '127.0.0.1:0', '--poll-interval', '1', '--sse-retry', '1', '--log', 'warn', ...extra],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  const lines = createInterface({ input: child.stdout });
  const [first] = await withTimeout(once(lines, 'line'), 'the server to start');
  const url = first.replace('listening on ', '').trim();
  return {
    url,
    port: Number(new URL(url).port),
    async stop() {
      child.kill('SIGTERM');
      await once(child, 'exit');
    },
  };
}

/** A TCP proxy to `port` whose connections can all be cut at once. */
async function startProxy(port) {
  const sockets = new Set();
  const server = net.createServer((client) => {
    const upstream = net.connect(port, '127.0.0.1');
    for (const [a, b] of [[client, upstream], [upstream, client]]) {
      sockets.add(a);
      a.on('error', () => b.destroy());
      a.on('close', () => {
        sockets.delete(a);
        b.destroy();
      });
      a.pipe(b);
    }
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    cut() {
      const open = sockets.size;
      for (const socket of sockets) socket.destroy();
      return open;
    },
    close() {
      server.close();
      for (const socket of sockets) socket.destroy();
    },
  };
}

async function publish(base, channel, data) {
  const response = await fetch(`${base}/pub/${channel}`, { method: 'POST', body: data });
  if (!response.ok) throw new Error(`publish answered ${response.status}`);
  return (await response.json()).id;
}

function withTimeout(promise, what, ms = PATIENCE) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Waits in the page until `predicate(arg)` holds. */
async function waitInPage(page, predicate, arg, what) {
  try {
    await page.waitForFunction(predicate, arg, { timeout: PATIENCE, polling: 50 });
    return true;
  } catch (err) {
    check(false, `${what} (${err.message.split('\n')[0]})`);
    return false;
  }
}

function sameSequence(got, expected) {
  return got.length === expected.length && got.every((value, i) => value === expected[i]);
}

const browser = await chromium.launch({
  executablePath: args.chromium,
  headless: true,
  args: ['--no-sandbox', '--disable-dev-shm-usage'],
});

try {
  // 1. The demo page: four panels, one technique each.
  {
    const server = await startServer();
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    page.on('pageerror', (err) => check(false, `no error in the page: ${err.message}`));
    await page.goto(`${server.url}/?channel=e2e&poll_interval=250`);
    await waitInPage(
      page,
      (names) => names.every((name) => window.pushDemo?.panels?.[name]?.subscription?.cursor),
      TECHNIQUES,
      'every panel to know its cursor',
    );
    await waitInPage(
      page,
      (names) => names.every((name) => (window.pushDemo.presence?.connections?.[name] ?? 0) >= 1),
      TECHNIQUES,
      'the page to show a connection of every technique watching',
    );
    const shown = await page.textContent('#watching-counts');
    check(TECHNIQUES.every((name) => shown.includes(`${name} 1`)), `demo page: who is watching, by technique (${shown})`);
    const sent = [];
    for (let i = 1; i <= 20; i += 1) {
      const data = `message ${i}`;
      await publish(server.url, 'e2e', data);
      sent.push(data);
    }
    await page.fill('[data-publish-input], #publish-text, input[type=text]', 'from the page');
    await page.keyboard.press('Enter');
    sent.push('from the page');
    const arrived = await waitInPage(
      page,
      ({ names, count }) => names.every((name) => window.pushDemo.panels[name].messages.length >= count),
      { names: TECHNIQUES, count: sent.length },
      'every panel to get every message',
    );
    for (const name of TECHNIQUES) {
      const got = await page.evaluate((n) => window.pushDemo.panels[n].messages.map((m) => m.data), name);
      check(sameSequence(got, sent), `demo page: ${name} panel got all ${sent.length} messages in order, once (got ${got.length})`);
      const stats = await page.evaluate((n) => window.pushDemo.panels[n].subscription.stats, name);
      check(stats.messages === sent.length && stats.requests >= 1 && stats.bytes > 0, `demo page: ${name} counters (${JSON.stringify(stats)})`);
    }
    if (arrived) {
      const polls = await page.evaluate(() => window.pushDemo.panels.poll.subscription.stats.requests);
      const sse = await page.evaluate(() => window.pushDemo.panels.sse.subscription.stats.requests);
      check(polls > sse, `demo page: short polling made more requests (${polls}) than SSE (${sse})`);
    }
    if (args.screenshot) {
      mkdirSync(dirname(args.screenshot), { recursive: true });
      await page.screenshot({ path: args.screenshot, fullPage: true });
      console.log(`screenshot: ${args.screenshot}`);
    }
    await page.close();
    await server.stop();
  }

  // 2. WebSockets off: the default order falls back, nothing is lost.
  {
    const server = await startServer(['--transports', 'poll,longpoll,sse']);
    const page = await browser.newPage();
    await page.goto(`${server.url}/healthz`);
    await page.evaluate(async () => {
      const { subscribe } = await import('/push.js');
      window.got = [];
      window.sub = subscribe('fallback', (message) => window.got.push(message.data), {});
    });
    await waitInPage(page, () => window.sub.cursor && window.sub.transport && window.sub.transport !== 'ws', null, 'push.js to fall back from WebSocket');
    const transport = await page.evaluate(() => window.sub.transport);
    check(transport === 'sse', `fallback: WebSockets refused, now on ${transport}`);
    const sent = [];
    for (let i = 1; i <= 10; i += 1) {
      sent.push(`fallback ${i}`);
      await publish(server.url, 'fallback', `fallback ${i}`);
    }
    await waitInPage(page, (count) => window.got.length >= count, sent.length, 'the fallback to get every message');
    check(sameSequence(await page.evaluate(() => window.got), sent), 'fallback: every message, in order, once');
    await page.close();
    await server.stop();
  }

  // 3. Every connection cut mid-stream: each technique resumes from its cursor.
  {
    const server = await startServer();
    const proxy = await startProxy(server.port);
    const page = await browser.newPage();
    await page.goto(`${proxy.url}/healthz`);
    await page.evaluate(async (names) => {
      const { subscribe } = await import('/push.js');
      window.got = {};
      window.subs = {};
      for (const name of names) {
        window.got[name] = [];
        window.subs[name] = subscribe('drops', (message) => window.got[name].push(message.data), {
          transports: [name],
          pollInterval: 200,
        });
      }
    }, TECHNIQUES);
    await waitInPage(page, (names) => names.every((n) => window.subs[n].cursor), TECHNIQUES, 'every technique to know its cursor');
    const sent = [];
    for (let i = 1; i <= 5; i += 1) {
      sent.push(`before ${i}`);
      await publish(server.url, 'drops', `before ${i}`);
    }
    await waitInPage(page, ({ names, count }) => names.every((n) => window.got[n].length >= count), { names: TECHNIQUES, count: 5 }, 'the first five everywhere');
    const cut = proxy.cut();
    check(cut > 0, `drops: cut ${cut} browser connections`);
    for (let i = 1; i <= 5; i += 1) {
      sent.push(`while down ${i}`);
      await publish(server.url, 'drops', `while down ${i}`);
    }
    for (let i = 1; i <= 5; i += 1) {
      sent.push(`after ${i}`);
      await publish(server.url, 'drops', `after ${i}`);
    }
    await waitInPage(page, ({ names, count }) => names.every((n) => window.got[n].length >= count), { names: TECHNIQUES, count: sent.length }, 'every technique to resume');
    for (const name of TECHNIQUES) {
      const got = await page.evaluate((n) => window.got[n], name);
      check(sameSequence(got, sent), `drops: ${name} resumed with every message, in order, once (got ${got.length})`);
    }
    await page.close();
    proxy.close();
    await server.stop();
  }

  // 4. Who is watching, by name: two viewers with tokens naming them.
  {
    const secret = 'the e2e subscriber token secret, 32 bytes';
    const server = await startServer(['--jwt-secret', secret]);
    const token = (sub) => {
      const part = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');
      const body = `${part({ alg: 'HS256', typ: 'JWT' })}.${part({ sub, exp: Math.floor(Date.now() / 1000) + 600, channels: ['watched'] })}`;
      return `${body}.${createHmac('sha256', secret).update(body).digest('base64url')}`;
    };
    const alice = await browser.newPage();
    alice.on('pageerror', (err) => check(false, `no error in alice's page: ${err.message}`));
    await alice.goto(`${server.url}/?channel=watched&poll_interval=250&token=${token('alice')}`);
    await waitInPage(alice, () => window.pushDemo.presence?.users?.some((u) => u.user === 'alice'), null, 'alice to see herself watching');
    const bob = await browser.newPage();
    await bob.goto(`${server.url}/?channel=watched&poll_interval=250&token=${token('bob')}`);
    await waitInPage(alice, () => window.pushDemo.changes.some((c) => c.type === 'join' && c.user === 'bob'), null, "bob's join on alice's page");
    await waitInPage(alice, () => document.getElementById('watching-users').textContent.includes('bob'), null, "bob listed on alice's page");
    const everywhere = await waitInPage(
      alice,
      (names) => names.every((name) => window.pushDemo.presence.users.find((u) => u.user === 'bob')?.connections?.[name] >= 1),
      TECHNIQUES,
      "bob's four panels listed on alice's page",
    );
    const listed = await alice.evaluate(() => window.pushDemo.presence.users.find((u) => u.user === 'bob'));
    check(everywhere, `who is watching: bob on every technique (${JSON.stringify(listed)})`);
    await bob.close();
    await alice.close();
    await server.stop();
  }
} catch (err) {
  check(false, `the browser tests ran to the end: ${err.stack ?? err}`);
} finally {
  await browser.close();
}

console.log(failures === 0 ? 'e2e: all passed' : `e2e: ${failures} failed`);
process.exit(failures === 0 ? 0 : 1);
