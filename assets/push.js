// push.js: the browser client of push (docs/js-client.md).
//
// One dependency-free ES module. It subscribes to a channel over WebSockets,
// Server-Sent Events, long polling or short polling (docs/protocol.md), falls
// back down that list when a technique is refused or blocked, moves back up
// when it can, and resumes every connection from one cursor: nothing lost,
// nothing twice.
//
//   import { subscribe } from "/push.js";
//   const news = subscribe("news", (m) => console.log(m.id, m.data));
//   // m.data: text, bytes, or the parsed value of a JSON message (m.json)
//   // ... later: news.close();

/** The techniques, most preferred first: the default order. */
export const TRANSPORTS = Object.freeze(["ws", "sse", "longpoll", "poll"]);

/** Ids of delivered messages remembered to drop duplicates. */
const RECENT = 1024;
/** A connection that stayed up this long (or delivered something) worked. */
const STABLE_MS = 5000;

const DEFAULTS = {
  transports: TRANSPORTS,
  since: undefined,
  last: undefined,
  token: undefined,
  url: undefined,
  pollInterval: undefined,
  longpollTimeout: 30,
  upgradeInterval: 30000,
  connectTimeout: 10000,
  fallbackAfter: 3,
  backoff: { initial: 1000, max: 30000, factor: 2 },
  onSignal: undefined,
  onPresence: undefined,
  onTransport: undefined,
  onStatus: undefined,
  onError: undefined,
};

/**
 * A failure of a connection or request. `fatal` ones end the subscription.
 */
export class PushError extends Error {
  /**
   * @param {string} message
   * @param {{transport?: string, status?: number, code?: string,
   *          closeCode?: number, fatal?: boolean, refused?: boolean,
   *          cause?: unknown}} [details]
   */
  constructor(message, details = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.name = "PushError";
    /** @type {string|undefined} the technique it happened on */
    this.transport = details.transport;
    /** @type {number|undefined} the HTTP status, when one was seen */
    this.status = details.status;
    /** @type {string|undefined} the server's error code (protocol.md §1.7) */
    this.code = details.code;
    /** @type {number|undefined} the WebSocket close code */
    this.closeCode = details.closeCode;
    /** @type {boolean} the subscription stopped because of it */
    this.fatal = Boolean(details.fatal);
    /** @type {boolean} the server does not offer this technique */
    this.refused = Boolean(details.refused);
  }
}

/**
 * @typedef {object} Message
 * @property {string} channel the channel it was published to
 * @property {string} [id] its cursor (opaque: compare for equality only);
 *   none on an ephemeral message
 * @property {boolean} [ephemeral] true for an ephemeral message (published
 *   with `store: false`): live only, never stored, never resumed
 * @property {string} [event] its event name, when the publisher gave one
 * @property {number} time when the server accepted it, ms since the Unix epoch
 * @property {*} data text (a string), the bytes of binary data (a
 *   Uint8Array), or for a message published as JSON the parsed value
 *   (any JSON value: object, array, number, boolean, null, or a string)
 * @property {boolean} [json] true when it was published as JSON: tells a
 *   JSON string value from text
 */

/**
 * @typedef {object} Signal
 * @property {"gap"|"reset"} type gap: messages were lost; reset: the history
 *   was lost (another epoch), nothing is known about what was missed
 * @property {string} [since] the cursor the server was asked to resume after
 * @property {string} [resume] where the stream continues from
 * @property {number} [missed] how many messages were lost (gap), when known
 * @property {string} transport the technique it came on
 */

/**
 * @typedef {object} Stats
 * @property {number} messages messages delivered to `onMessage`
 * @property {number} requests HTTP requests made (a WebSocket handshake or
 *   an EventSource connection counts as one)
 * @property {number} bytes bytes received: response bodies, WebSocket text
 *   frames, SSE `data` fields (UTF-8); headers and framing not counted
 * @property {number|null} lastLatencyMs receive time minus the last
 *   message's `time` (client clock minus server clock)
 * @property {number} duplicates messages dropped because already delivered
 * @property {number} ephemeral ephemeral messages delivered (also counted in
 *   `messages`)
 */

/**
 * @typedef {object} PresenceChange
 * @property {"join"|"leave"} type join: a user's first connection to the
 *   channel; leave: its last went
 * @property {string} user who (a subscriber token's `sub`)
 * @property {string} technique the connection that joined or left
 * @property {number} time when the server saw it, ms since the Unix epoch
 */

/**
 * @typedef {object} Options
 * @property {string[]} [transports] techniques to use, in order of
 *   preference: any of "ws", "sse", "longpoll", "poll"
 * @property {string} [since] "earliest" or a cursor; absent: live, only what
 *   is published from now on
 * @property {number} [last] start with the last N messages the channel
 *   retains, then live (a dashboard's initial state in one request); sent
 *   only until a cursor is known, then every request resumes from the
 *   cursor. Not with `since`.
 * @property {string|(() => string)} [token] subscriber token, sent as
 *   `?token=` on every URL (a function is called before each connection)
 * @property {string} [url] the server's base URL (default: this page's origin)
 * @property {string} [base] alias of `url`
 * @property {number} [pollInterval] short polling: ms between polls, instead
 *   of the server's advice (`Push-Poll-Interval`)
 * @property {number} [longpollTimeout] long polling: seconds a request is held
 * @property {number} [upgradeInterval] ms between attempts to move back up to
 *   a preferred technique (jittered ±20%; 0 or Infinity: never)
 * @property {number} [connectTimeout] ms a connection may take to open
 * @property {number} [fallbackAfter] failed reconnects of a technique that
 *   worked before falling back to the next one
 * @property {{initial?: number, max?: number, factor?: number}} [backoff]
 *   reconnect delays in ms (each delay is jittered down by up to 50%)
 * @property {(signal: Signal) => void} [onSignal] gap and reset
 * @property {(change: PresenceChange) => void} [onPresence] joins and
 *   leaves of users in the channel (the server is asked for them, with
 *   `presence=1`, only when this is given); short polling gets none:
 *   ask {@link presence} instead
 * @property {(transport: string, previous: string|null) => void} [onTransport]
 * @property {(status: string, transport: string|null) => void} [onStatus]
 *   "connecting", "open", "reconnecting", "closed"
 * @property {(error: PushError) => void} [onError] every failure; when
 *   `error.fatal`, the subscription has stopped
 */

/**
 * Subscribes to `channel`: `onMessage` gets every message, in order, once.
 *
 * @param {string} channel
 * @param {(message: Message) => void} onMessage
 * @param {Options} [options]
 * @returns {Subscription}
 */
export function subscribe(channel, onMessage, options = {}) {
  return new Subscription(channel, onMessage, options);
}

/**
 * Publishes `data` to `channel` (`POST /pub/{channel}`), exactly once: the
 * request carries an `Idempotency-Key` (yours, or a fresh UUID), and a
 * network error, a `408`, `429` or `503` is retried with the same key (so a
 * publish that was stored before its answer got lost is not stored twice).
 *
 * A string is published as text, a Uint8Array, ArrayBuffer or Blob as its
 * bytes; any other value (object, array, number, boolean, null) as JSON
 * (`JSON.stringify`, `Content-Type: application/json`), which subscribers
 * receive parsed. `{json: true}` publishes a string as a JSON string value.
 *
 * @param {string} channel
 * @param {*} data
 * `{store: false}` publishes an ephemeral message (typing indicators,
 * cursor positions): delivered to the subscribers live now, never stored,
 * never resumed; sent once, without a key (nothing is stored to compare a
 * retry with), and answered `{stored: false}`.
 *
 * @param {string} channel
 * @param {*} data
 * @param {{url?: string, token?: string, event?: string, key?: string, retries?: number, json?: boolean, store?: boolean}} [options]
 *   `token` is the publisher secret, sent as `Authorization: Bearer`; `key`
 *   the idempotency key; `retries` how many times to retry (default 3);
 *   `json` publishes `data` as JSON whatever its type; `store: false`
 *   publishes it ephemeral
 * @returns {Promise<{id: string}|{stored: false}>} the message's cursor
 */
export async function publish(channel, data, options = {}) {
  const ephemeral = options.store === false;
  if (ephemeral && options.key !== undefined) {
    throw new TypeError("push: an ephemeral publish (store: false) takes no key");
  }
  const params = new URLSearchParams();
  if (options.event) params.set("event", options.event);
  if (ephemeral) params.set("store", "false");
  const query = params.size ? `?${params}` : "";
  const headers = ephemeral ? {} : { "Idempotency-Key": options.key ?? newKey() };
  if (options.token) headers.Authorization = `Bearer ${options.token}`;
  const asJson = options.json === true || !(typeof data === "string" || isBytes(data));
  if (asJson) {
    const text = JSON.stringify(data);
    if (text === undefined) throw new TypeError("push: this value cannot be published as JSON");
    data = text;
    headers["Content-Type"] = "application/json";
  }
  const url = `${baseUrl(options.url)}/pub/${encodeURIComponent(channel)}${query}`;
  const retries = ephemeral ? 0 : (options.retries ?? 3);
  for (let attempt = 0; ; attempt++) {
    let error;
    try {
      const response = await fetch(url, { method: "POST", headers, body: data });
      const text = await response.text();
      if (response.ok) return JSON.parse(text);
      error = httpError(response.status, text, "publish");
      if (error.fatal || error.refused) throw error;
    } catch (err) {
      error = asPushError(err);
      if (error.fatal || error.refused) throw error;
    }
    if (attempt >= retries) throw error;
    await sleep(Math.min(4000, 250 * 2 ** attempt) * (0.5 + Math.random() / 2));
  }
}

/**
 * Who is subscribed to `channel` now (`GET /presence/{channel}`): users in
 * name order (a page of them, `next` naming where the following page
 * starts), anonymous connections counted, and every connection by technique.
 *
 * @param {string} channel
 * @param {{url?: string, token?: string, after?: string, limit?: number}} [options]
 *   `token` a subscriber token that may read the channel
 * @returns {Promise<{channel: string, users: {user: string, connections: Object<string, number>}[], user_count: number, anonymous: Object<string, number>, connections: Object<string, number>, next: string|null}>}
 */
export async function presence(channel, options = {}) {
  const params = new URLSearchParams();
  if (options.token) params.set("token", options.token);
  if (options.after) params.set("after", options.after);
  if (options.limit) params.set("limit", String(options.limit));
  const query = params.size ? `?${params}` : "";
  const response = await fetch(`${baseUrl(options.url)}/presence/${encodeURIComponent(channel)}${query}`, {
    cache: "no-store",
  });
  const text = await response.text();
  if (!response.ok) throw httpError(response.status, text, "presence");
  return JSON.parse(text);
}

/** Data `fetch` sends as bytes. */
function isBytes(data) {
  return (
    ArrayBuffer.isView(data) ||
    data instanceof ArrayBuffer ||
    (typeof Blob === "function" && data instanceof Blob)
  );
}

/** Resolves after `ms` milliseconds. */
function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** A fresh idempotency key. */
function newKey() {
  if (globalThis.crypto?.randomUUID) return globalThis.crypto.randomUUID();
  return `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}${Math.random().toString(36).slice(2)}`;
}

/** One subscription: see {@link subscribe}. */
export class Subscription {
  /** @type {Stats} live counters */
  stats = { messages: 0, requests: 0, bytes: 0, lastLatencyMs: null, duplicates: 0, ephemeral: 0 };
  #channel;
  #onMessage;
  #opts;
  #base;
  /** @type {string[]} */
  #order;
  /** @type {string|null} where the next connection starts */
  #cursor;
  #status = "";
  /** @type {string|null} */
  #transport = null;
  /** @type {Link|null} */
  #active = null;
  /** @type {Link|null} */
  #probe = null;
  #retryTimer = undefined;
  #probeTimer = undefined;
  #closed = false;
  #refused = new Set();
  #worked = new Set();
  /** Rounds through every technique that all failed, since one worked. */
  #rounds = 0;
  /** Failures in a row of the current technique. */
  #transportFailures = 0;
  #recent = new Set();
  #sinceProbe = 0;
  /** What links report to (kept off the public surface). */
  #hooks = {
    opened: (link) => this.#opened(link),
    message: (link, envelope) => this.#message(link, envelope),
    signal: (link, type, body) => this.#signal(link, type, body),
    position: (link, cursor) => this.#position(link, cursor),
    failed: (link, error) => this.#failed(link, error),
    url: (kind, params) => this.#url(kind, params),
    stats: this.stats,
  };

  /**
   * @param {string} channel
   * @param {(message: Message) => void} onMessage
   * @param {Options} [options]
   */
  constructor(channel, onMessage, options = {}) {
    if (typeof channel !== "string" || channel === "") throw new TypeError("push: channel must be a non-empty string");
    if (typeof onMessage !== "function") throw new TypeError("push: onMessage must be a function");
    this.#channel = channel;
    this.#onMessage = onMessage;
    this.#opts = { ...DEFAULTS, ...defined(options), backoff: { ...DEFAULTS.backoff, ...defined(options.backoff) } };
    this.#base = baseUrl(options.url ?? options.base);
    this.#order = [...this.#opts.transports];
    const unknown = this.#order.find((t) => !TRANSPORTS.includes(t));
    if (unknown || this.#order.length === 0) throw new TypeError(`push: unknown transport ${unknown ?? "(none given)"}`);
    if (options.since != null && typeof options.since !== "string") throw new TypeError("push: since must be a string");
    this.#cursor = options.since ?? null;
    if (options.last != null) {
      if (!Number.isSafeInteger(options.last) || options.last < 0) throw new TypeError("push: last must be a whole number");
      if (options.since != null) throw new TypeError("push: since and last cannot be given together");
    }
    // Started on a microtask, so that callbacks never run before
    // `subscribe` has returned.
    queueMicrotask(() => this.#closed || this.#connect(0, "main"));
  }

  /** The channel. */
  get channel() {
    return this.#channel;
  }

  /**
   * Where a new connection would start: the id of the last message (or the
   * `resume` of the last signal, or the channel's position when the
   * subscription started live). `null` while a live start is still unknown;
   * `"earliest"` until an `earliest` start has learnt a position.
   * @type {string|null}
   */
  get cursor() {
    return this.#cursor;
  }

  /** The technique in use (or being connected): "ws", "sse", "longpoll", "poll". */
  get transport() {
    return this.#transport;
  }

  /** "connecting", "open", "reconnecting" or "closed". */
  get status() {
    return this.#status || "connecting";
  }

  /**
   * Stops: closes connections and cancels timers. `onStatus("closed")` is
   * the last callback; nothing runs after it.
   */
  close() {
    if (this.#closed) return;
    this.#stop();
    this.#setStatus("closed");
  }

  // ---- connections ----

  /** Opens technique number `index` of the order, as the main connection or a probe. */
  #connect(index, role) {
    const name = this.#order[index];
    const link = new Link(this.#hooks, this.#opts, name, index, role, this.#cursor);
    if (role === "main") {
      this.#active = link;
      const previous = this.#transport;
      this.#transport = name;
      if (previous !== name) this.#call("onTransport", name, previous);
      if (this.#status !== "reconnecting") this.#setStatus("connecting");
    } else {
      this.#probe = link;
      this.#sinceProbe = 0;
    }
    link.start();
  }

  /** A link is established. */
  #opened(link) {
    if (link.role === "probe") {
      if (link !== this.#probe) return;
      this.#probe = null;
      const old = this.#active;
      const moved = this.#cursor !== link.since;
      this.#active = null;
      old?.stop();
      if (moved && this.#sinceProbe > RECENT / 2) {
        // More was delivered meanwhile than duplicates can be told apart
        // from: start this technique afresh from the cursor instead.
        link.stop();
        this.#connect(link.index, "main");
        return;
      }
      link.role = "main";
      link.catchingUp = moved;
      this.#active = link;
      const previous = this.#transport;
      this.#transport = link.name;
      this.#transportFailures = 0;
      this.#call("onTransport", link.name, previous);
    }
    if (link !== this.#active) return;
    this.#worked.add(link.name);
    this.#setStatus("open");
    this.#scheduleProbe();
  }

  /** A message from a link. */
  #message(link, envelope) {
    if (link !== this.#active) return;
    if (envelope.ephemeral === true && (envelope.event === "push.join" || envelope.event === "push.leave")) {
      const type = envelope.event === "push.join" ? "join" : "leave";
      const { user, technique } = envelope.data ?? {};
      this.#call("onPresence", { type, user, technique, time: envelope.time });
      return;
    }
    if (envelope.ephemeral === true) {
      // Not in the history: no id, nothing to deduplicate or resume.
      this.stats.ephemeral += 1;
      this.stats.messages += 1;
      return this.#deliver(envelope);
    }
    const id = envelope.id;
    if (this.#recent.has(id)) {
      this.stats.duplicates += 1;
      return;
    }
    this.#remember(id);
    link.catchingUp = false;
    link.delivered += 1;
    this.#sinceProbe += 1;
    this.#cursor = id;
    this.stats.messages += 1;
    this.stats.lastLatencyMs = typeof envelope.time === "number" ? Date.now() - envelope.time : null;
    this.#deliver(envelope);
  }

  /** Hands an envelope to `onMessage`, its data decoded. */
  #deliver(envelope) {
    let message = envelope;
    if (envelope.encoding === "base64") {
      const { encoding, ...rest } = envelope;
      message = { ...rest, data: decodeBase64(envelope.data) };
    } else if (envelope.encoding === "json") {
      // `data` is the value itself, parsed with the envelope.
      const { encoding, ...rest } = envelope;
      message = { ...rest, json: true };
    }
    try {
      this.#onMessage(message);
    } catch (err) {
      reportError(err);
    }
  }

  /** A gap or reset from a link. */
  #signal(link, type, body) {
    if (link !== this.#active) return;
    const { op, ...fields } = body;
    const key = `${type}:${fields.resume}`;
    if (fields.resume != null) {
      if (this.#recent.has(key)) return;
      this.#remember(key);
      this.#cursor = fields.resume;
    }
    link.catchingUp = false;
    this.#call("onSignal", { type, ...fields, transport: link.name });
  }

  /** A position without a message (a live start, a batch's cursor, a 204). */
  #position(link, cursor) {
    if (link !== this.#active || !cursor) return;
    if (link.catchingUp) {
      if (cursor === this.#cursor) link.catchingUp = false;
      return;
    }
    this.#cursor = cursor;
  }

  /** A link failed or ended. */
  #failed(link, error) {
    error.transport ??= link.name;
    if (link.role === "probe") {
      if (link !== this.#probe) return;
      this.#probe = null;
      if (error.refused || error.fatal) this.#refused.add(link.name);
      this.#scheduleProbe();
      return;
    }
    if (link !== this.#active) return;
    this.#active = null;
    this.#probe?.stop();
    this.#probe = null;
    clearTimeout(this.#probeTimer);
    if (error.fatal) return this.#fatal(error);
    // "connecting" until something has worked, then "reconnecting".
    this.#setStatus(this.#worked.size ? "reconnecting" : "connecting");
    this.#call("onError", error);
    if (this.#closed) return;
    if (error.refused) this.#refused.add(link.name);
    const healthy = link.openedAt !== 0 && (link.delivered > 0 || Date.now() - link.openedAt >= STABLE_MS);
    if (healthy) {
      this.#rounds = 0;
      this.#transportFailures = 1;
    } else {
      this.#transportFailures += 1;
    }
    const stay =
      !error.refused && this.#worked.has(link.name) && this.#transportFailures < this.#opts.fallbackAfter;
    if (stay) return this.#retry(link.index, this.#transportFailures);
    this.#transportFailures = 0;
    const next = this.#candidate(link.index + 1);
    if (next !== -1) return this.#connect(next, "main");
    const first = this.#candidate(0);
    if (first === -1) {
      return this.#fatal(new PushError("push: no technique is available", { transport: link.name, fatal: true, cause: error }));
    }
    this.#rounds += 1;
    this.#retry(first, this.#rounds);
  }

  /** The first technique from `from` on that is not known to be refused. */
  #candidate(from) {
    for (let i = from; i < this.#order.length; i += 1) {
      if (!this.#refused.has(this.#order[i])) return i;
    }
    return -1;
  }

  #retry(index, attempt) {
    const { initial, max, factor } = this.#opts.backoff;
    const delay = Math.min(max, initial * factor ** Math.max(0, attempt - 1)) * (0.5 + Math.random() / 2);
    clearTimeout(this.#retryTimer);
    this.#retryTimer = setTimeout(() => this.#closed || this.#connect(index, "main"), delay);
  }

  /** While on a lower technique, tries the preferred one now and then. */
  #scheduleProbe() {
    clearTimeout(this.#probeTimer);
    const every = this.#opts.upgradeInterval;
    if (!this.#active || this.#probe || !(every > 0) || every === Infinity) return;
    const best = this.#candidate(0);
    if (best === -1 || best >= this.#active.index) return;
    this.#probeTimer = setTimeout(() => {
      if (this.#closed || !this.#active || this.#probe) return;
      const target = this.#candidate(0);
      if (target === -1 || target >= this.#active.index) return;
      this.#connect(target, "probe");
    }, every * (0.8 + Math.random() * 0.4));
  }

  #fatal(error) {
    error.fatal = true;
    this.#stop();
    this.#setStatus("closed");
    this.#call("onError", error);
  }

  #stop() {
    this.#closed = true;
    clearTimeout(this.#retryTimer);
    clearTimeout(this.#probeTimer);
    this.#active?.stop();
    this.#probe?.stop();
    this.#active = this.#probe = null;
  }

  #remember(key) {
    this.#recent.add(key);
    if (this.#recent.size > RECENT) this.#recent.delete(this.#recent.values().next().value);
  }

  #setStatus(status) {
    if (status === this.#status) return;
    this.#status = status;
    this.#call("onStatus", status, this.#transport);
  }

  #call(name, ...args) {
    const callback = this.#opts[name];
    if (typeof callback !== "function") return;
    try {
      callback(...args);
    } catch (err) {
      reportError(err);
    }
  }

  // ---- what links need ----

  /** The URL of an endpoint, with the token. */
  #url(kind, params) {
    const query = new URLSearchParams();
    for (const [key, value] of Object.entries(params)) {
      if (value != null) query.set(key, String(value));
    }
    // `last` only while no cursor is known: after that, resume from it.
    if ("since" in params && params.since == null && this.#opts.last > 0) query.set("last", String(this.#opts.last));
    const token = typeof this.#opts.token === "function" ? this.#opts.token() : this.#opts.token;
    if (token) query.set("token", token);
    if (this.#opts.onPresence && kind !== "poll") query.set("presence", "1");
    const search = query.toString();
    const url = `${this.#base}/${kind}/${encodeURIComponent(this.#channel)}${search ? `?${search}` : ""}`;
    return kind === "ws" ? url.replace(/^http/, "ws") : url;
  }
}

/**
 * One connection (or, for the polling techniques, one loop of requests) of
 * one technique, from one starting cursor. Each one reports to its
 * subscription, which ignores it once it is no longer the active one.
 */
class Link {
  /**
   * @param {object} hooks the subscription's
   * @param {object} options the subscription's
   * @param {string} name
   * @param {number} index
   * @param {"main"|"probe"} role
   * @param {string|null} since
   */
  constructor(hooks, options, name, index, role, since) {
    this.hooks = hooks;
    this.options = options;
    this.name = name;
    this.index = index;
    this.role = role;
    /** where it started */
    this.since = since;
    /** where its own stream is (the next request's `since`) */
    this.pos = since;
    this.dead = false;
    this.openedAt = 0;
    this.delivered = 0;
    this.catchingUp = false;
    this.timers = new Set();
    this.abort = new AbortController();
    this.stopTransport = () => {};
  }

  start() {
    const timeout = this.options.connectTimeout;
    if (timeout > 0) {
      this.later(timeout, () => {
        if (!this.openedAt) this.fail(new PushError(`push: ${this.name} did not open within ${timeout} ms`));
      });
    }
    try {
      this.stopTransport = OPEN[this.name](this) ?? (() => {});
    } catch (err) {
      this.fail(asPushError(err));
    }
  }

  stop() {
    if (this.dead) return;
    this.dead = true;
    for (const timer of this.timers) clearTimeout(timer);
    this.timers.clear();
    this.abort.abort();
    try {
      this.stopTransport();
    } catch {
      // closing a dead connection
    }
  }

  later(ms, fn) {
    const timer = setTimeout(() => {
      this.timers.delete(timer);
      if (!this.dead) fn();
    }, ms);
    this.timers.add(timer);
  }

  /** Resolves after `ms`, or at once when the link stops. */
  sleep(ms) {
    return new Promise((resolve) => {
      if (this.dead) return resolve();
      this.abort.signal.addEventListener("abort", resolve, { once: true });
      this.later(ms, resolve);
    });
  }

  opened() {
    if (this.dead || this.openedAt) return;
    this.openedAt = Date.now();
    this.hooks.opened(this);
  }

  message(envelope) {
    if (this.dead) return;
    if (envelope?.ephemeral === true) return this.hooks.message(this, envelope);
    if (!envelope || typeof envelope.id !== "string") {
      return this.fail(new PushError("push: a message without an id"));
    }
    this.pos = envelope.id;
    this.hooks.message(this, envelope);
  }

  signal(type, body) {
    if (this.dead) return;
    if (typeof body?.resume === "string") this.pos = body.resume;
    this.hooks.signal(this, type, body ?? {});
  }

  position(cursor) {
    if (this.dead || typeof cursor !== "string" || cursor === "") return;
    this.pos = cursor;
    this.hooks.position(this, cursor);
  }

  /** A batch of polling or long polling (protocol.md §1.5). */
  batch(batch) {
    if (batch.gap) this.signal("gap", batch.gap);
    if (batch.reset) this.signal("reset", batch.reset);
    for (const envelope of batch.messages ?? []) {
      if (this.dead) return;
      this.message(envelope);
    }
    this.position(batch.cursor);
  }

  fail(error) {
    if (this.dead) return;
    this.stop();
    this.hooks.failed(this, error);
  }

  request() {
    this.hooks.stats.requests += 1;
  }

  received(bytes) {
    this.hooks.stats.bytes += bytes;
  }

  url(kind, params) {
    return this.hooks.url(kind, params);
  }

  /**
   * A GET of an HTTP endpoint; resolves to {status, headers, body (text)};
   * rejects with a PushError on an error status or a network error.
   */
  async get(kind, params, { headers = {}, timeout = 0 } = {}) {
    this.request();
    const timer =
      timeout > 0 ? setTimeout(() => this.fail(new PushError(`push: ${kind} request timed out`)), timeout) : undefined;
    let response;
    let bytes;
    try {
      response = await fetch(this.url(kind, params), { headers, cache: "no-store", signal: this.abort.signal });
      bytes = new Uint8Array(await response.arrayBuffer());
    } catch (err) {
      throw new PushError(`push: ${kind} request failed: ${err?.message ?? err}`, { cause: err });
    } finally {
      clearTimeout(timer);
    }
    this.received(bytes.length);
    const body = new TextDecoder().decode(bytes);
    if (response.status >= 400) throw httpError(response.status, body, kind);
    return { status: response.status, headers: response.headers, body };
  }
}

// ---- the four techniques ----
//
// Each opens its connection for a link and returns how to close it. It
// calls link.opened() once established (before delivering anything),
// link.message / signal / position as the stream goes, link.fail() when it
// ends, and counts requests and bytes.

const OPEN = {
  /** WebSocket, `GET /ws/{channel}` (protocol.md §5.2). */
  ws(link) {
    if (typeof WebSocket !== "function") {
      return link.fail(new PushError("push: WebSocket is not available here", { refused: true }));
    }
    link.request();
    const socket = new WebSocket(link.url("ws", { since: link.pos }));
    socket.onopen = () => link.opened();
    socket.onmessage = (event) => {
      if (typeof event.data !== "string") return;
      link.received(utf8Length(event.data));
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch (err) {
        return link.fail(new PushError("push: a WebSocket frame that is not JSON", { cause: err }));
      }
      if (frame.op === undefined) link.message(frame);
      else if (frame.op === "gap" || frame.op === "reset") link.signal(frame.op, frame);
      else if (frame.op === "subscribed") link.position(frame.cursor);
    };
    socket.onerror = () => {}; // a close event follows
    socket.onclose = (event) => {
      const reason = event.reason ? `: ${event.reason}` : "";
      link.fail(
        new PushError(
          link.openedAt
            ? `push: WebSocket closed (${event.code}${reason})`
            : `push: WebSocket refused or blocked (${event.code}${reason})`,
          { closeCode: event.code },
        ),
      );
    };
    return () => {
      socket.onopen = socket.onmessage = socket.onclose = null;
      socket.onerror = () => {};
      socket.close(1000);
    };
  },

  /** Server-Sent Events, `GET /sse/{channel}?format=json` (protocol.md §4). */
  sse(link) {
    if (typeof EventSource !== "function") {
      return link.fail(new PushError("push: EventSource is not available here", { refused: true }));
    }
    let source = null;
    const open = () => {
      if (link.dead) return;
      link.request();
      source = new EventSource(link.url("sse", { since: link.pos, format: "json" }));
      source.onopen = () => link.opened();
      source.onmessage = (event) => {
        link.received(utf8Length(event.data));
        let envelope;
        try {
          envelope = JSON.parse(event.data);
        } catch (err) {
          return link.fail(new PushError("push: an event that is not JSON", { cause: err }));
        }
        link.message(envelope);
      };
      // A live start: the stream's first event names where it starts, so
      // that a reconnect (which push.js makes itself, with `since`) misses
      // nothing published in between (protocol.md §4.3).
      source.addEventListener("push.subscribed", (event) => {
        link.received(utf8Length(event.data));
        try {
          link.position(JSON.parse(event.data).cursor);
        } catch {
          link.position(event.lastEventId);
        }
      });
      for (const type of ["gap", "reset"]) {
        source.addEventListener(`push.${type}`, (event) => {
          link.received(utf8Length(event.data));
          let body = {};
          try {
            body = JSON.parse(event.data);
          } catch {
            body = { resume: event.lastEventId || undefined };
          }
          link.signal(type, body);
        });
      }
      source.onerror = (event) => {
        // push.js reconnects itself (from its own cursor), so that every
        // technique shares one backoff and one fallback rule.
        source.close();
        const status = typeof event?.code === "number" ? event.code : undefined;
        if (status !== undefined && status !== 200) {
          return link.fail(httpError(status, event.message ?? "", "sse"));
        }
        link.fail(
          new PushError(link.openedAt ? "push: event stream ended" : "push: event stream refused or blocked"),
        );
      };
    };
    open();
    return () => source?.close();
  },

  /** Long polling, `GET /longpoll/{channel}` (protocol.md §3). */
  longpoll(link) {
    (async () => {
      // The first request answers at once: it proves the technique works and,
      // for a live start, says where "now" is.
      let timeout = 0;
      while (!link.dead) {
        const held = link.options.longpollTimeout;
        const answer = await link.get(
          "longpoll",
          { since: link.pos, timeout },
          { timeout: (timeout + 15) * 1000 },
        );
        if (link.dead) return;
        link.opened();
        if (answer.status === 204) link.position(etag(answer.headers));
        else link.batch(JSON.parse(answer.body));
        timeout = held;
      }
    })().catch((err) => link.fail(asPushError(err)));
  },

  /** Short polling, `GET /poll/{channel}` (protocol.md §2). */
  poll(link) {
    (async () => {
      while (!link.dead) {
        const known = link.pos != null && link.pos !== "earliest";
        const headers = known ? { "If-None-Match": `"${link.pos}"` } : {};
        const answer = await link.get(
          "poll",
          { since: link.pos },
          { headers, timeout: link.options.connectTimeout },
        );
        if (link.dead) return;
        link.opened();
        let more = false;
        if (answer.status !== 304) {
          const batch = JSON.parse(answer.body);
          link.batch(batch);
          more = batch.more === true;
        }
        if (more) continue;
        const advised = Number(answer.headers.get("Push-Poll-Interval"));
        const interval = link.options.pollInterval ?? (advised > 0 ? advised : 5000);
        await link.sleep(interval * (0.9 + Math.random() * 0.2));
      }
    })().catch((err) => link.fail(asPushError(err)));
  },
};

// ---- helpers ----

/** The server's base URL, without a trailing slash. */
function baseUrl(url) {
  const here = globalThis.location?.href;
  if (url == null) {
    if (!here) throw new TypeError("push: no page origin here: give options.url");
    return globalThis.location.origin;
  }
  return new URL(url, here).href.replace(/\/+$/, "");
}

/** A PushError for an HTTP error answer (protocol.md §1.7). */
function httpError(status, body, kind) {
  let code;
  let text = "";
  try {
    const error = JSON.parse(body).error;
    code = error?.code;
    text = error?.message ?? "";
  } catch {
    text = String(body ?? "").slice(0, 200);
  }
  // Retrying cannot help a 4xx (but 408 and 429); a 404, 405 or 426 means
  // this technique is not served here: try the next one. Others (bad
  // channel, bad cursor, no or bad token) would fail on every technique.
  const refused = [404, 405, 426, 501].includes(status);
  const fatal = status >= 400 && status < 500 && status !== 408 && status !== 429 && !refused;
  return new PushError(`push: ${kind} answered ${status}${code ? ` ${code}` : ""}${text ? `: ${text}` : ""}`, {
    status,
    code,
    fatal,
    refused,
  });
}

/** `object` without its undefined fields (so that they take the defaults). */
function defined(object = {}) {
  return Object.fromEntries(Object.entries(object).filter(([, value]) => value !== undefined));
}

function asPushError(err) {
  return err instanceof PushError ? err : new PushError(`push: ${err?.message ?? err}`, { cause: err });
}

/** The cursor in an `ETag` header (`"C"` or `W/"C"`). */
function etag(headers) {
  const tag = headers.get("ETag");
  const match = tag && /^(?:W\/)?"([^"]*)"$/.exec(tag.trim());
  return match ? match[1] : undefined;
}

function decodeBase64(text) {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i += 1) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

/** UTF-8 length of a string, without encoding it. */
function utf8Length(text) {
  let length = text.length;
  for (let i = 0; i < text.length; i += 1) {
    const unit = text.charCodeAt(i);
    if (unit >= 0x80) length += unit < 0x800 || (unit >= 0xd800 && unit <= 0xdfff) ? 1 : 2;
  }
  return length;
}

function reportError(err) {
  if (typeof globalThis.reportError === "function") globalThis.reportError(err);
  else setTimeout(() => {
    throw err;
  });
}
