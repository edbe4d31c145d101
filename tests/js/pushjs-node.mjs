// push.js against a real server, from Node (no browser needed).
//
//   node tests/js/pushjs-node.mjs [SERVER_URL]
//
// SERVER_URL defaults to http://127.0.0.1:18080. When nothing answers there,
// this starts push-server on that address itself (the binary from
// PUSH_SERVER_BIN, default target/debug/push-server) and can then restart it,
// which the reset check needs; against a server it did not start, the reset
// check is skipped (said so). `cargo test -p push-server --test pushjs` runs
// it that way.
//
// Node 20 has fetch but neither WebSocket nor EventSource: the npm packages
// `ws` and `eventsource` are installed as those globals, from
// PUSH_TEST_NODE_PATH (default: target/third-party/node_modules, which
// `npm ci --prefix target/third-party` fills from tests/third-party).
//
// Each check prints PASS or FAIL; the exit code is 1 when any failed. Every
// wait is on a condition, with a generous timeout only as a safety net.

import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createRequire } from 'node:module';
import net from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const NODE_PATH = process.env.PUSH_TEST_NODE_PATH ?? join(ROOT, 'target/third-party/node_modules');
const SERVER_BIN = process.env.PUSH_SERVER_BIN ?? join(ROOT, 'target/debug/push-server');
const SERVER = new URL(process.argv[2] ?? 'http://127.0.0.1:18080');
const BASE = SERVER.origin;
const PATIENCE = 30_000;
const ALL = ['ws', 'sse', 'longpoll', 'poll'];
/** Each transport alone, then the default order. */
const LISTS = [...ALL.map((t) => [t]), null];
const listName = (list) => (list ? list.join(',') : 'default order');
/** Fast retries and polls, so that the checks do not wait for defaults. */
const QUICK = { backoff: { initial: 100, max: 1000 }, pollInterval: 50 };

const require = createRequire(join(NODE_PATH, 'noop.js'));
const RealWebSocket = require('ws');
const { EventSource: RealEventSource } = require('eventsource');
globalThis.WebSocket = RealWebSocket;
globalThis.EventSource = RealEventSource;
const { subscribe, publish: pushPublish, PushError } = await import(
  pathToFileURL(join(ROOT, 'assets/push.js')).href
);

// ---- reporting ----

let failures = 0;
let passes = 0;
function check(ok, what) {
  console.log(`${ok ? 'PASS' : 'FAIL'} ${what}`);
  if (ok) passes += 1;
  else failures += 1;
  return ok;
}

/** Resolves once `condition()` holds; rejects after `ms`. */
async function waitFor(condition, what, ms = PATIENCE) {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Runs one named check; an exception is its failure, not the script's. */
async function section(name, body) {
  console.log(`-- ${name}`);
  try {
    await body();
  } catch (err) {
    check(false, `${name}: ${err?.stack ?? err}`);
  }
}

// ---- the server ----

let child = null;
// Never leave a server behind, however the script ends.
process.on('exit', () => child?.exitCode === null && child.kill('SIGKILL'));
async function answers() {
  try {
    await fetch(`${BASE}/poll/ping`, { signal: AbortSignal.timeout(2000) });
    return true;
  } catch {
    return false;
  }
}

async function startServer() {
  child = spawn(SERVER_BIN, ['--listen', SERVER.host, '--log', 'error'], { stdio: ['ignore', 'ignore', 'inherit'] });
  child.on('error', (err) => console.error(`cannot start ${SERVER_BIN}: ${err.message}`));
  const deadline = Date.now() + PATIENCE;
  while (!(await answers())) {
    if (child.exitCode !== null || Date.now() > deadline) throw new Error(`${SERVER_BIN} did not start on ${BASE}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function stopServer() {
  if (!child || child.exitCode !== null) return;
  child.kill('SIGKILL');
  await once(child, 'exit');
}

const external = await answers();
if (external) console.log(`using the server at ${BASE} (not restartable: the reset check is skipped)`);
else {
  console.log(`starting ${SERVER_BIN} --listen ${SERVER.host}`);
  await startServer();
}

/** Publishes straight to the server (never through the proxy). */
async function publish(channel, data) {
  return (await pushPublish(channel, data, { url: BASE })).id;
}

let serial = 0;
const run = `${process.pid.toString(36)}${Date.now().toString(36)}`;
const channelFor = (what) => `t${run}-${(serial += 1)}-${what}`.replace(/[^A-Za-z0-9_.:@-]/g, '_');

// ---- a TCP proxy whose connections can be cut, and that can refuse WebSockets ----

async function startProxy() {
  const sockets = new Set();
  const state = { blockWebSocket: false, refused: 0 };
  const server = net.createServer((client) => {
    sockets.add(client);
    client.on('error', () => {});
    client.on('close', () => sockets.delete(client));
    client.once('data', (first) => {
      if (state.blockWebSocket && /\r\nupgrade:\s*websocket/i.test(first.toString('latin1'))) {
        state.refused += 1;
        client.destroy(); // as a firewall that drops WebSockets
        return;
      }
      const upstream = net.connect(Number(SERVER.port), SERVER.hostname);
      sockets.add(upstream);
      upstream.on('error', () => client.destroy());
      upstream.on('close', () => {
        sockets.delete(upstream);
        client.destroy();
      });
      client.on('close', () => upstream.destroy());
      upstream.write(first);
      client.pipe(upstream);
      upstream.pipe(client);
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    state,
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

// ---- stand-ins for blocked techniques ----

/** A WebSocket that never opens: errors, then closes with 1006, as a blocked one. */
class BlockedWebSocket extends EventTarget {
  static instances = 0;
  constructor(url) {
    super();
    BlockedWebSocket.instances += 1;
    this.url = url;
    this.readyState = 0;
    setTimeout(() => {
      this.readyState = 3;
      this.onerror?.(new Event('error'));
      this.onclose?.({ type: 'close', code: 1006, reason: '', wasClean: false });
    }, 0);
  }
  send() {
    throw new Error('not open');
  }
  close() {
    this.readyState = 3;
  }
}

/** An EventSource whose connection fails before opening, as a blocked one. */
class BlockedEventSource extends EventTarget {
  static instances = 0;
  constructor(url) {
    super();
    BlockedEventSource.instances += 1;
    this.url = url;
    this.readyState = 0;
    setTimeout(() => {
      if (this.readyState === 2) return;
      this.readyState = 2;
      this.onerror?.(new Event('error'));
    }, 0);
  }
  close() {
    this.readyState = 2;
  }
}

// ---- a subscriber that records everything ----

function record(channel, options = {}) {
  const got = { messages: [], signals: [], errors: [], transports: [], statuses: [] };
  got.sub = subscribe(channel, (m) => got.messages.push(m), {
    ...options,
    url: options.url ?? BASE,
    onSignal: (s) => {
      got.signals.push({ ...s, at: got.messages.length });
    },
    onError: (e) => got.errors.push(e),
    onTransport: (t) => got.transports.push(t),
    onStatus: (s) => got.statuses.push(s),
  });
  got.data = () => got.messages.map((m) => show(m.data));
  got.until = (count, what) =>
    waitFor(() => got.messages.length >= count, `${count} messages (${what}); got ${got.messages.length}`);
  return got;
}

/** A value as comparable text: binary data as hex. */
function show(data) {
  if (data instanceof Uint8Array) return `bytes:${Buffer.from(data).toString('hex')}`;
  return data;
}

function same(got, expected) {
  return got.length === expected.length && got.every((v, i) => v === expected[i]);
}

function firstDifference(got, expected) {
  const n = Math.max(got.length, expected.length);
  for (let i = 0; i < n; i += 1) {
    if (got[i] !== expected[i]) return `at ${i}: got ${JSON.stringify(got[i])}, expected ${JSON.stringify(expected[i])}`;
  }
  return 'none';
}

/**
 * Publishes a last message and waits for it: whatever arrived before it is
 * all that will (the stream is in order), so equality with `expected` then
 * means every message once and nothing else. `checks` are
 * `[recorder, expected, what]` of subscribers of one channel.
 */
async function settleAll(channel, checks) {
  const last = `end ${serial}`;
  await publish(channel, last);
  for (const [got, expected, what] of checks) {
    expected.push(last);
    await waitFor(() => got.data().includes(last), `the closing message of ${what}`);
    const data = got.data();
    check(same(data, expected), `${what}: ${expected.length} messages, in order, once (${data.length} got; first difference ${firstDifference(data, expected)})`);
  }
}

const settle = (got, channel, expected, what) => settleAll(channel, [[got, expected, what]]);

/** A continuous publisher, for switches that happen under load. */
function publisher(channel, prefix, sent, every = 15) {
  let running = true;
  let i = 0;
  const done = (async () => {
    while (running) {
      i += 1;
      const data = `${prefix} ${i}`;
      sent.push(data);
      await publish(channel, data);
      await new Promise((r) => setTimeout(r, every));
    }
  })();
  return {
    async stop() {
      running = false;
      await done;
    },
  };
}

// ---- the checks ----

const proxy = await startProxy();

// 1. Every technique, alone and in the default order: since=earliest and
// live, text, binary, multi-line and non-ASCII data, counters.
for (const list of LISTS) {
  await section(`delivery over ${listName(list)}`, async () => {
    const name = listName(list);
    const channel = channelFor(`deliver-${name}`);
    const expected = [];
    const ids = [];
    for (let i = 1; i <= 3; i += 1) {
      expected.push(`before ${i}`);
      ids.push(await publish(channel, `before ${i}`));
    }
    const earliest = record(channel, { ...QUICK, transports: list ?? undefined, since: 'earliest' });
    await earliest.until(3, 'retained');
    const live = record(channel, { ...QUICK, transports: list ?? undefined });
    await waitFor(() => live.sub.cursor, 'the live subscription to know where it starts');
    const samples = [
      new Uint8Array([0xff, 0x00, 0x01, 0xfe]),
      'two\nlines\r\nand a CR\r',
      'héllo ✓ 🎉',
      '{"json":"as text"}',
    ];
    const fresh = [];
    for (let i = 1; i <= 16; i += 1) {
      const data = i <= samples.length ? samples[i - 1] : `message ${i}`;
      ids.push(await publish(channel, data));
      fresh.push(show(data));
    }
    expected.push(...fresh);
    const liveExpected = [...fresh];
    await settleAll(channel, [
      [earliest, expected, `${name}, since=earliest`],
      [live, liveExpected, `${name}, live`],
    ]);
    const gotIds = earliest.messages.slice(0, ids.length).map((m) => m.id);
    check(same(gotIds, ids), `${name}: message ids are the ids publishing answered`);
    check(
      earliest.messages.every((m) => m.channel === channel && typeof m.time === 'number' && !('encoding' in m)),
      `${name}: messages carry channel and time; binary data decoded to a Uint8Array`,
    );
    const transport = list ? list[0] : 'ws';
    check(
      earliest.sub.transport === transport && live.sub.transport === transport,
      `${name}: on ${transport} (${earliest.sub.transport}, ${live.sub.transport})`,
    );
    const s = earliest.sub.stats;
    check(
      s.messages === expected.length && s.requests >= 1 && s.bytes > 200 && s.duplicates === 0 &&
        typeof s.lastLatencyMs === 'number' && s.lastLatencyMs >= 0 && s.lastLatencyMs < 10_000,
      `${name}: stats ${JSON.stringify(s)}`,
    );
    check(earliest.sub.cursor === earliest.messages.at(-1).id, `${name}: cursor is the last message's id`);
    check(earliest.errors.length === 0 && live.errors.length === 0, `${name}: no errors (${earliest.errors.map(String)})`);
    check(earliest.signals.length === 0, `${name}: no signal`);
    earliest.sub.close();
    live.sub.close();
    check(earliest.sub.status === 'closed', `${name}: closed`);
  });
}

// 1b. JSON data: publish() sends non-string values as JSON, and every
// technique hands the parsed value to the callback (with `json: true`), a
// string published as text stays text, a JSON string value stays apart.
for (const list of LISTS) {
  await section(`JSON data over ${listName(list)}`, async () => {
    const name = listName(list);
    const channel = channelFor(`json-${name}`);
    const got = record(channel, { ...QUICK, transports: list ?? undefined, since: 'earliest' });
    const published = [
      [{ a: [1, 'two'], n: 2.5, nested: { ok: true } }, {}],
      ['hi', {}],
      ['hi', { json: true }],
      [42, {}],
      [null, {}],
      [['x', { y: null }], {}],
    ];
    for (const [data, options] of published) await pushPublish(channel, data, { url: BASE, ...options });
    await got.until(published.length, 'JSON messages');
    const seen = got.messages.map((m) => [m.json === true, JSON.stringify(m.data), 'encoding' in m]);
    const expected = published.map(([data, options]) => [typeof data !== 'string' || options.json === true, JSON.stringify(data), false]);
    check(
      JSON.stringify(seen) === JSON.stringify(expected),
      `${name}: JSON values parsed, text as text (${JSON.stringify(seen)})`,
    );
    check(typeof got.messages[0].data === 'object' && got.messages[0].data.nested.ok === true, `${name}: an object, not a string`);
    check(got.errors.length === 0, `${name}: no errors (${got.errors.map(String)})`);
    got.sub.close();
  });
}

// 1c. `last`: the last N retained first, then live; `last` is sent only
// until a cursor is known (a burst after it arrives whole, no duplicates).
for (const list of LISTS) {
  await section(`last over ${listName(list)}`, async () => {
    const name = listName(list);
    const channel = channelFor(`last-${name}`);
    for (const n of ['1', '2', '3', '4', '5']) await publish(channel, n);
    const got = record(channel, { ...QUICK, transports: list ?? undefined, last: 2 });
    await got.until(2, 'the last two');
    const burst = ['6', '7', '8', '9'];
    for (const n of burst) await publish(channel, n);
    await settle(got, channel, ['4', '5', ...burst], `${name}: last=2`);
    check(got.signals.length === 0 && got.sub.stats.duplicates === 0, `${name}: no signal, no duplicate`);
    got.sub.close();
  });
}

// 1d. Ephemeral publishes (`store: false`): a live subscriber on a
// streaming or held technique gets them marked, without an id, in place,
// and its cursor stays on the stored messages (short polling reads history
// only, so it never gets them).
for (const list of [['ws'], ['sse'], ['longpoll']]) {
  await section(`ephemeral over ${listName(list)}`, async () => {
    const name = listName(list);
    const channel = channelFor(`ephemeral-${name}`);
    const got = record(channel, { ...QUICK, transports: list, since: 'earliest' });
    await publish(channel, '1');
    await got.until(1, 'the first stored message');
    // A long poll between two requests is not live: send until one lands.
    const deadline = Date.now() + PATIENCE;
    for (let sent = 1; !got.messages.some((m) => m.ephemeral); sent++) {
      if (Date.now() > deadline) throw new Error(`${name}: no ephemeral message arrived`);
      const answer = await pushPublish(channel, `typing ${sent}`, { url: BASE, store: false });
      check(answer.stored === false && answer.id === undefined, `${name}: answered {stored: false}`);
      await waitFor(() => got.messages.some((m) => m.ephemeral), 'an ephemeral message', 200).catch(() => {});
    }
    await publish(channel, '2');
    await waitFor(() => got.data().includes('2'), `${name}: the next stored message`);
    const stored = got.messages.filter((m) => !m.ephemeral);
    const ephemeral = got.messages.filter((m) => m.ephemeral);
    check(same(stored.map((m) => m.data), ['1', '2']), `${name}: stored messages once, in order (${stored.map((m) => m.data)})`);
    check(ephemeral.every((m) => m.id === undefined && m.data.startsWith('typing')), `${name}: ephemeral ones carry no id`);
    check(got.messages.at(-1).data === '2', `${name}: the ephemeral ones came before the next stored one`);
    check(got.sub.cursor === stored.at(-1).id, `${name}: the cursor is the last stored message's id`);
    check(got.sub.stats.ephemeral === ephemeral.length && got.sub.stats.duplicates === 0, `${name}: counted, no duplicate`);
    let thrown;
    try {
      await pushPublish(channel, 'x', { url: BASE, store: false, key: 'k' });
    } catch (err) {
      thrown = err;
    }
    check(thrown instanceof TypeError, `${name}: a key with store: false is refused (${thrown})`);
    got.sub.close();
  });
}

await section('last: more than retained is all; not with since', async () => {
  const channel = channelFor('last-all');
  for (const n of ['1', '2']) await publish(channel, n);
  const got = record(channel, { ...QUICK, transports: ['poll'], last: 10 });
  await settle(got, channel, ['1', '2'], 'last=10 of 2');
  got.sub.close();
  let thrown;
  try {
    subscribe(channel, () => {}, { url: BASE, since: 'earliest', last: 2 });
  } catch (err) {
    thrown = err;
  }
  check(thrown instanceof TypeError, `since with last is refused (${thrown})`);
});

await section('JSON data: invalid JSON is refused, and stores nothing', async () => {
  const channel = channelFor('json-invalid');
  const answer = await fetch(`${BASE}/pub/${channel}`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: '{oops',
  });
  const body = await answer.json();
  check(answer.status === 400 && body.error?.code === 'invalid_json', `400 invalid_json (${answer.status} ${JSON.stringify(body)})`);
  const polled = await (await fetch(`${BASE}/poll/${channel}?since=earliest`)).json();
  check(polled.messages.length === 0, `nothing stored (${polled.messages.length})`);
  let thrown;
  try {
    await pushPublish(channel, undefined, { url: BASE });
  } catch (err) {
    thrown = err;
  }
  check(thrown instanceof TypeError, `publish(undefined) is refused before sending (${thrown})`);
});

// 2. Cursor resume: every connection cut (twice), messages published while
// down; nothing lost, nothing twice.
for (const list of LISTS) {
  await section(`resume after cut connections over ${listName(list)}`, async () => {
    const name = listName(list);
    const channel = channelFor(`cut-${name}`);
    const got = record(channel, { ...QUICK, transports: list ?? undefined, url: proxy.url });
    await waitFor(() => got.sub.cursor && got.sub.status === 'open', 'the subscription to open');
    const expected = [];
    for (let round = 1; round <= 2; round += 1) {
      for (let i = 1; i <= 5; i += 1) {
        expected.push(`round ${round} up ${i}`);
        await publish(channel, `round ${round} up ${i}`);
      }
      await got.until(expected.length, `round ${round}`);
      const requests = got.sub.stats.requests;
      const cut = proxy.cut();
      for (let i = 1; i <= 5; i += 1) {
        expected.push(`round ${round} down ${i}`);
        await publish(channel, `round ${round} down ${i}`);
      }
      await got.until(expected.length, `round ${round} after the cut`);
      check(cut > 0 && got.sub.stats.requests > requests, `${name}: round ${round}: ${cut} sockets cut, reconnected (${got.sub.stats.requests - requests} requests since)`);
    }
    await settle(got, channel, expected, `${name}, resumed after two cuts`);
    check(got.signals.length === 0, `${name}: no gap or reset after cuts`);
    got.sub.close();
  });
}

// A new subscription from an old one's cursor (a page reload that stored it).
await section('resume with since = a closed subscription\'s cursor', async () => {
  const channel = channelFor('since-cursor');
  const first = record(channel, { ...QUICK, since: 'earliest' });
  for (let i = 1; i <= 3; i += 1) await publish(channel, `seen ${i}`);
  await first.until(3, 'the first three');
  first.sub.close();
  const expected = [];
  for (let i = 1; i <= 5; i += 1) {
    expected.push(`missed ${i}`);
    await publish(channel, `missed ${i}`);
  }
  const subs = LISTS.map((list) => [listName(list), record(channel, { ...QUICK, transports: list ?? undefined, since: first.sub.cursor })]);
  await settleAll(channel, subs.map(([name, got]) => [got, [...expected], `${name}: since the old cursor`]));
  for (const [, got] of subs) got.sub.close();
});

// 3. Fallback when techniques are refused or blocked.
await section('fallback: WebSockets dropped by the network', async () => {
  const channel = channelFor('fallback-proxy');
  proxy.state.blockWebSocket = true;
  const refused = proxy.state.refused;
  const got = record(channel, { ...QUICK, url: proxy.url, upgradeInterval: 0 });
  await waitFor(() => got.sub.cursor && got.sub.status === 'open', 'the subscription to open');
  check(got.sub.transport === 'sse' && proxy.state.refused > refused, `WebSocket blocked: fell back to ${got.sub.transport} (${got.transports})`);
  const expected = [];
  for (let i = 1; i <= 10; i += 1) {
    expected.push(`fallback ${i}`);
    await publish(channel, `fallback ${i}`);
  }
  await settle(got, channel, expected, 'fallback to sse');
  got.sub.close();
  proxy.state.blockWebSocket = false;
});

await section('fallback: no WebSocket, no EventSource', async () => {
  const cases = [
    { ws: BlockedWebSocket, es: RealEventSource, list: undefined, expect: 'sse' },
    { ws: BlockedWebSocket, es: BlockedEventSource, list: undefined, expect: 'longpoll' },
    { ws: BlockedWebSocket, es: BlockedEventSource, list: ['ws', 'sse', 'poll'], expect: 'poll' },
    { ws: undefined, es: undefined, list: undefined, expect: 'longpoll' },
  ];
  for (const c of cases) {
    const what = `${c.ws ? c.ws.name : 'no WebSocket'} + ${c.es ? c.es.name : 'no EventSource'}, ${c.list ?? 'default order'}`;
    globalThis.WebSocket = c.ws;
    globalThis.EventSource = c.es;
    try {
      const channel = channelFor('fallback-stub');
      const expected = ['early'];
      await publish(channel, 'early');
      const got = record(channel, { ...QUICK, transports: c.list, since: 'earliest', upgradeInterval: 0 });
      await got.until(1, what);
      check(got.sub.transport === c.expect, `${what}: on ${got.sub.transport}, expected ${c.expect} (went ${got.transports})`);
      for (let i = 1; i <= 5; i += 1) {
        expected.push(`stub ${i}`);
        await publish(channel, `stub ${i}`);
      }
      await settle(got, channel, expected, what);
      got.sub.close();
    } finally {
      globalThis.WebSocket = RealWebSocket;
      globalThis.EventSource = RealEventSource;
    }
  }
});

// 4. Moving back up: a lower technique first, then the preferred one comes
// back while messages keep coming; the switch loses and repeats nothing.
await section('upgrade: back to WebSockets when they pass again', async () => {
  for (const list of [null, ['ws', 'longpoll'], ['ws', 'poll']]) {
    const name = listName(list);
    const channel = channelFor(`upgrade-${name}`);
    proxy.state.blockWebSocket = true;
    const got = record(channel, { ...QUICK, transports: list ?? undefined, url: proxy.url, upgradeInterval: 300 });
    const lower = list ? list[1] : 'sse';
    await waitFor(() => got.sub.transport === lower && got.sub.status === 'open', `${name}: to fall back to ${lower}`);
    const sent = [];
    const load = publisher(channel, 'flow', sent);
    await waitFor(() => got.messages.length >= 10, 'messages on the lower technique');
    const probesBefore = proxy.state.refused;
    await waitFor(() => proxy.state.refused > probesBefore, 'a probe of WebSockets while blocked');
    check(got.sub.transport === lower, `${name}: a refused probe leaves it on ${lower}`);
    proxy.state.blockWebSocket = false;
    await waitFor(() => got.sub.transport === 'ws', `${name}: to move back up to ws`);
    const switched = sent.length;
    await waitFor(() => sent.length >= switched + 20, 'more messages after the switch');
    await load.stop();
    await settle(got, channel, sent, `${name}: ${lower} -> ws under load`);
    check(
      same(got.transports, list ? ['ws', lower, 'ws'] : ['ws', 'sse', 'ws']),
      `${name}: transports went ${got.transports.join(' -> ')} (${got.sub.stats.duplicates} duplicate(s) dropped at the switch)`,
    );
    got.sub.close();
  }
  proxy.state.blockWebSocket = false;
});

await section('upgrade: back to SSE when EventSource works again', async () => {
  globalThis.EventSource = BlockedEventSource;
  try {
    const channel = channelFor('upgrade-sse');
    const got = record(channel, { ...QUICK, transports: ['sse', 'poll'], upgradeInterval: 300 });
    await waitFor(() => got.sub.transport === 'poll' && got.sub.status === 'open', 'to fall back to poll');
    const sent = [];
    const load = publisher(channel, 'flow', sent);
    const blocked = BlockedEventSource.instances;
    await waitFor(() => BlockedEventSource.instances > blocked, 'a probe of SSE while blocked');
    globalThis.EventSource = RealEventSource;
    await waitFor(() => got.sub.transport === 'sse', 'to move back up to sse');
    const switched = sent.length;
    await waitFor(() => sent.length >= switched + 20, 'more messages after the switch');
    await load.stop();
    await settle(got, channel, sent, 'poll -> sse under load');
    got.sub.close();
  } finally {
    globalThis.EventSource = RealEventSource;
  }
});

// 5. Gap: away for longer than the history (1,000 messages) reaches back.
await section('gap signal on every technique', async () => {
  const channel = channelFor('gap');
  for (let i = 1; i <= 5; i += 1) await publish(channel, `p${i}`);
  const first = record(channel, { ...QUICK, since: 'earliest' });
  await first.until(5, 'the first five');
  const cursor = first.sub.cursor;
  first.sub.close();
  for (let i = 1; i <= 1050; i += 1) await publish(channel, `g${i}`);
  const retained = Array.from({ length: 1000 }, (_, i) => `g${i + 51}`);
  const subs = LISTS.map((list) => [listName(list), record(channel, { ...QUICK, transports: list ?? undefined, since: cursor })]);
  for (const [name, got] of subs) {
    await got.until(1000, `${name}: the retained messages`);
    const signal = got.signals[0];
    check(
      got.signals.length === 1 && signal.type === 'gap' && signal.since === cursor && signal.at === 0 &&
        (signal.missed === undefined || signal.missed === 50) && typeof signal.resume === 'string',
      `${name}: a gap before the retained messages (${JSON.stringify(got.signals)})`,
    );
  }
  await settleAll(channel, subs.map(([name, got]) => [got, [...retained], `${name}: after the gap, the 1000 retained`]));
  for (const [, got] of subs) got.sub.close();
});

// 6. Reset: the server restarts (a new epoch); every subscriber is told, and
// continues in the new history.
await section('reset signal after a server restart', async () => {
  if (external) {
    console.log('SKIP reset: the server was not started by this script, so it cannot restart it');
    return;
  }
  const channel = channelFor('reset');
  const subs = LISTS.map((list) => [
    listName(list),
    record(channel, { ...QUICK, transports: list ?? undefined, url: proxy.url, since: 'earliest' }),
  ]);
  for (let i = 1; i <= 3; i += 1) await publish(channel, `old ${i}`);
  for (const [name, got] of subs) await got.until(3, `${name}: the old epoch`);
  const old = subs.map(([, got]) => got.sub.cursor);
  await stopServer();
  await startServer();
  for (let i = 1; i <= 3; i += 1) await publish(channel, `new ${i}`);
  for (const [i, [name, got]] of subs.entries()) {
    await got.until(6, `${name}: the new epoch`);
    const reset = got.signals[0];
    check(
      got.signals.length === 1 && reset.type === 'reset' && reset.since === old[i] && reset.at === 3,
      `${name}: a reset from the old epoch before the new messages (${JSON.stringify(got.signals)})`,
    );
  }
  const expected = ['old 1', 'old 2', 'old 3', 'new 1', 'new 2', 'new 3'];
  await settleAll(channel, subs.map(([name, got]) => [got, [...expected], `${name}: continued after the reset`]));
  for (const [, got] of subs) got.sub.close();
});

// 7. Fatal errors stop; close() stops.
await section('fatal errors', async () => {
  for (const [what, channel, options, status, code] of [
    ['a bad channel over longpoll', 'bad channel!', { transports: ['longpoll'] }, 400, 'invalid_channel'],
    ['a bad channel over poll', 'bad channel!', { transports: ['poll'] }, 400, 'invalid_channel'],
    ['a malformed since, default order', channelFor('fatal'), { since: 'zz' }, 400, 'invalid_cursor'],
  ]) {
    const got = record(channel, { ...QUICK, ...options });
    await waitFor(() => got.sub.status === 'closed', `${what}: to stop`);
    const fatal = got.errors.find((e) => e.fatal);
    // EventSource reports the status of a refused stream, never its body.
    check(
      fatal instanceof PushError && fatal.status === status && (fatal.code === code || fatal.transport === 'sse') &&
        got.statuses.at(-1) === 'closed',
      `${what}: fatal ${fatal?.status} ${fatal?.code} on ${fatal?.transport}, then closed`,
    );
  }
});

await section('close() stops everything', async () => {
  for (const list of LISTS) {
    const channel = channelFor('close');
    const got = record(channel, { ...QUICK, transports: list ?? undefined });
    await waitFor(() => got.sub.status === 'open' && got.sub.cursor, 'to open');
    got.sub.close();
    const requests = got.sub.stats.requests;
    await publish(channel, 'after close');
    // An absence: give it a moment in which a live one would have delivered.
    const watcher = record(channel, { ...QUICK, since: 'earliest' });
    await watcher.until(1, 'a second subscriber to get it');
    await new Promise((r) => setTimeout(r, 200));
    watcher.sub.close();
    check(
      got.messages.length === 0 && got.sub.stats.requests === requests && got.sub.status === 'closed',
      `${listName(list)}: nothing delivered or requested after close()`,
    );
  }
});

// 8. The token goes on every URL; short polls revalidate (304) and honour
// the server's advised interval.
await section('token on every URL, 304s, advised poll interval', async () => {
  const urls = [];
  const statuses = [];
  const realFetch = globalThis.fetch;
  globalThis.fetch = async (url, init) => {
    urls.push({ url: String(url), at: Date.now() });
    const response = await realFetch(url, init);
    statuses.push({ url: String(url), status: response.status });
    return response;
  };
  globalThis.WebSocket = class extends RealWebSocket {
    constructor(url, ...rest) {
      urls.push({ url: String(url), at: Date.now() });
      super(url, ...rest);
    }
  };
  globalThis.EventSource = class extends RealEventSource {
    constructor(url, ...rest) {
      urls.push({ url: String(url), at: Date.now() });
      super(url, ...rest);
    }
  };
  try {
    const channel = channelFor('token');
    let calls = 0;
    const subs = LISTS.map((list, i) =>
      record(channel, {
        ...QUICK,
        transports: list ?? undefined,
        token: i % 2 ? 'se cret/+' : () => `fn${(calls += 1)}`,
      }),
    );
    await waitFor(() => subs.every((g) => g.sub.cursor), 'every subscription to start');
    await publish(channel, 'one');
    await waitFor(() => subs.every((g) => g.messages.length === 1), 'every subscription to get it');
    await waitFor(
      () => statuses.some((s) => s.status === 304 && s.url.includes(`/poll/${channel}`)),
      'a 304 to a short poll',
    );
    const mine = urls.filter((u) => u.url.includes(channel) && !u.url.includes('/pub/'));
    const tokens = mine.map((u) => new URL(u.url).searchParams.get('token'));
    check(
      mine.length >= LISTS.length && tokens.every((t) => t === 'se cret/+' || /^fn\d+$/.test(t)),
      `a token on all ${mine.length} subscribing URLs (${[...new Set(tokens)].join(', ')})`,
    );
    check(true, 'short polling: an unchanged poll answered 304 (If-None-Match)');
    for (const got of subs) got.sub.close();

    // No pollInterval: the server's advice (push-server: 5000 ms) is used.
    const advised = channelFor('advice');
    const got = record(advised, { transports: ['poll'] });
    const polls = () => urls.filter((u) => u.url.includes(`/poll/${advised}`));
    await waitFor(() => polls().length >= 2, 'a second poll', 15_000);
    const gap = polls()[1].at - polls()[0].at;
    check(gap >= 4000 && gap <= 6500, `short polling waited ${gap} ms between polls (server advises 5000 ± 10%)`);
    got.sub.close();
  } finally {
    globalThis.fetch = realFetch;
    globalThis.WebSocket = RealWebSocket;
    globalThis.EventSource = RealEventSource;
  }
});

// 9. Publishing exactly once: every publish carries an Idempotency-Key; a
// retry with it answers the first id, and the same key with other data is
// refused (not retried).
{
  const channel = channelFor('idempotent');
  const first = await pushPublish(channel, 'once', { url: BASE, key: 'k-1' });
  const again = await pushPublish(channel, 'once', { url: BASE, key: 'k-1' });
  check(first.id === again.id, 'publish: a retry with its key answers the first id');
  await pushPublish(channel, 'twice', { url: BASE });
  const polled = await (await fetch(`${BASE}/poll/${channel}?since=earliest`)).json();
  check(polled.messages.length === 2, 'publish: stored once per key (and a fresh key per call)');
  let refusal;
  try {
    await pushPublish(channel, 'other', { url: BASE, key: 'k-1' });
  } catch (err) {
    refusal = err;
  }
  check(
    refusal instanceof PushError && refusal.code === 'idempotency_key_reused' && refusal.fatal,
    'publish: the same key with other data is refused, not retried'
  );
}

proxy.close();
await stopServer();
console.log(failures === 0 ? `push.js: all ${passes} checks passed` : `push.js: ${failures} FAILED, ${passes} passed`);
process.exit(failures === 0 ? 0 : 1);
