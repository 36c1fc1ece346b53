// Test driver for job/collector/static/inboxflow.js (run by tests/unit/test_snippet.py).
//
// Loads the snippet into a fresh `vm` context per "page load" with fakes the test controls:
// window/document/location/navigator, a Map-backed localStorage (shared between loads to
// model a navigation), fetch (answers scripted per scenario), sendBeacon, crypto with
// predictable UUIDs, Math.random, and fake timers (setTimeout/clearTimeout on a fake
// clock advanced by the scenario). Each scenario returns plain observations; the Python
// test makes the assertions. Prints {"<scenario>": result | {"error": stack}} as JSON.
//
// Usage: node driver.js [scenario ...]   (default: every scenario)
'use strict';

const fs = require('fs');
const path = require('path');
const vm = require('vm');

const SNIPPET = path.resolve(__dirname, '../../../job/collector/static/inboxflow.js');
const CODE = fs.readFileSync(SNIPPET, 'utf8');

class Storage {
  constructor() { this.m = new Map(); }
  getItem(k) { return this.m.has(k) ? this.m.get(k) : null; }
  setItem(k, v) { this.m.set(k, String(v)); }
  removeItem(k) { this.m.delete(k); }
  queue() { const q = this.getItem('inboxflow.queue'); return q === null ? null : JSON.parse(q); }
}

// Lets every pending promise callback run (the fakes answer with microtasks only).
const settle = async () => { for (let i = 0; i < 5; i++) await new Promise(r => setImmediate(r)); };

class Clock {
  constructor() { this.now = 0; this.seq = 0; this.timers = new Map(); }
  setTimeout(fn, ms) {
    const id = ++this.seq;
    this.timers.set(id, { id, at: this.now + Math.max(0, +ms || 0), fn });
    return id;
  }
  clearTimeout(id) { this.timers.delete(id); }
  pending() { return [...this.timers.values()].map(t => t.at).sort((a, b) => a - b); }
  async advance(ms) {
    const end = this.now + ms;
    for (;;) {
      await settle();
      const due = [...this.timers.values()].filter(t => t.at <= end)
        .sort((a, b) => a.at - b.at || a.id - b.id)[0];
      if (!due) break;
      this.timers.delete(due.id);
      this.now = due.at;
      due.fn();
    }
    this.now = end;
    await settle();
  }
}

let uuidCount = 0;
const nextUuid = () => `00000000-0000-4000-8000-${(++uuidCount).toString(16).padStart(12, '0')}`;

function response(status, body, headers) {
  const h = Object.fromEntries(Object.entries(headers || {}).map(([k, v]) => [k.toLowerCase(), v]));
  return {
    status,
    ok: status >= 200 && status < 300,
    headers: { get: name => (h[name.toLowerCase()] === undefined ? null : h[name.toLowerCase()]) },
    json: async () => body,
  };
}
const accept = req => response(202, { accepted: req.body.batch.length });

// One page load. respond(req) -> response(...) | 'network' | a Promise of either.
function load(opts = {}) {
  const clock = opts.clock || new Clock();
  const storage = opts.storage || new Storage();
  const respond = opts.respond || accept;
  const page = { clock, storage, requests: [], beacons: [], warn: [], error: [], flushes: [] };
  const listeners = { window: {}, document: {} };
  const on = where => (type, fn) => { (listeners[where][type] = listeners[where][type] || []).push(fn); };
  const document = {
    title: 'Demo shop', referrer: 'https://ref.example.com/x', visibilityState: 'visible',
    addEventListener: on('document'),
  };
  const navigator = { language: 'de-DE', userAgent: 'FakeAgent/1.0' };
  if (opts.beacon !== null) {
    navigator.sendBeacon = (url, blob) => {
      page.beacons.push({ url, blob, at: clock.now });
      return opts.beacon ? opts.beacon(url, blob) : true;
    };
  }
  const crypto = opts.crypto || {
    randomUUID: nextUuid,
    getRandomValues: a => a.fill(7),
  };
  const sandbox = {
    document,
    navigator,
    crypto,
    location: { href: 'https://shop.example.com/p/p-0001?ref=mail', pathname: '/p/p-0001' },
    console: {
      log: () => {},
      warn: (...a) => page.warn.push(a),
      error: (...a) => page.error.push(a.map(String)),
    },
    setTimeout: (fn, ms) => clock.setTimeout(fn, ms),
    clearTimeout: id => clock.clearTimeout(id),
    Blob,
    TextEncoder,
    addEventListener: on('window'),
    fetch: (url, init) => {
      const req = { url, method: init.method, headers: init.headers, keepalive: init.keepalive,
        body: JSON.parse(init.body), at: clock.now };
      page.requests.push(req);
      return Promise.resolve(respond(req, page)).then(r => {
        if (r === 'network') throw new TypeError('Failed to fetch');
        return r;
      });
    },
  };
  if (opts.localStorage === 'throws') {
    Object.defineProperty(sandbox, 'localStorage', {
      get() { throw new Error('SecurityError: access denied'); },
    });
  } else if (!opts.explicitStorage) {
    sandbox.localStorage = storage;
  }
  sandbox.window = sandbox;
  if (opts.config) sandbox.inboxflowConfig = opts.config;
  vm.createContext(sandbox);
  const randoms = opts.random || [0.5];
  let r = 0;
  sandbox.__random = () => randoms[Math.min(r++, randoms.length - 1)];
  vm.runInContext('Math.random = () => __random();', sandbox);
  vm.runInContext(CODE, sandbox, { filename: SNIPPET });
  page.sdk = sandbox.inboxflow;
  page.document = document;
  page.dispatch = (where, type) => (listeners[where][type] || []).forEach(fn => fn({ type }));
  page.init = extra => page.sdk.init(Object.assign({
    writeKey: 'K-123456', onFlush: info => page.flushes.push(plain(info)),
  }, opts.explicitStorage ? { storage } : {}, extra));
  return page;
}

// Values from the vm context, as plain JSON (also drops the event objects' prototypes).
const plain = v => JSON.parse(JSON.stringify(v));
const ids = events => events.map(e => e.event_id);
const requests = page => page.requests.map(r => ({ at: r.at, ids: ids(r.body.batch) }));
const queueIds = page => ids(page.storage.queue() || []);

const scenarios = {
  async identity() {
    const storage = new Storage();
    const a = load({ storage });
    a.init();
    const anonymous = plain(a.sdk.user());
    const viewed = a.sdk.track('product_view', { product_id: 'p-0001', price: 31.99, currency: 'EUR' });
    const paged = a.sdk.page({ title: 'Lavender Face Oil' });
    const identified = a.sdk.identify(' c-42 ', { email: 'ada@example.com', first_name: 'Ada', locale: 'en' });
    const added = a.sdk.track('cart_add', { product_id: 'p-0001', price: 31.99 });
    const after = plain(a.sdk.user());
    await a.sdk.flush();
    const b = load({ storage, clock: a.clock });
    b.init();
    const reloaded = plain(b.sdk.user());
    b.sdk.reset();
    const afterReset = plain(b.sdk.user());
    const anonAgain = b.sdk.track('cart_remove', { product_id: 'p-0001' });
    await b.sdk.flush();
    return {
      anonymous, after, reloaded, afterReset, returned: [viewed, paged, identified, added, anonAgain],
      sent: [...a.requests, ...b.requests].flatMap(r => r.body.batch),
      storage: Object.fromEntries(storage.m),
    };
  },

  async anonymousIdPersists() {
    const storage = new Storage();
    const a = load({ storage });
    a.init();
    const first = a.sdk.user().anonymous_id;
    const b = load({ storage });
    b.init();
    return { first, second: b.sdk.user().anonymous_id, stored: storage.getItem('inboxflow.anonymous_id') };
  },

  async batchPost() {
    const p = load();
    p.init({ writeKey: 'k/+ 1', endpoint: 'https://collector.example.com/' });
    const returned = [p.sdk.track('page_view'), p.sdk.track('page_view'), p.sdk.track('page_view')];
    await p.clock.advance(999);
    const before = p.requests.length;
    const queuedBefore = queueIds(p);
    await p.clock.advance(1);
    const r = p.requests[0];
    return {
      returned, before, queuedBefore,
      request: { url: r.url, method: r.method, headers: r.headers, keepalive: r.keepalive, at: r.at,
        keys: Object.keys(r.body), ids: ids(r.body.batch) },
      requests: p.requests.length,
      stats: plain(p.sdk.stats()),
      queueKey: p.storage.getItem('inboxflow.queue'),
      flushes: p.flushes.map(f => ({ status: f.status, accepted: f.accepted, ids: ids(f.events) })),
      pending: p.clock.pending(),
    };
  },

  async maxBatch() {
    const p = load();
    p.init({ maxBatch: 2 });
    const sent = [p.sdk.track('page_view')];
    await p.clock.advance(0);
    const afterOne = p.requests.length;
    sent.push(p.sdk.track('page_view'));
    await p.clock.advance(0);
    return { sent, afterOne, afterTwo: requests(p), queued: p.sdk.stats().queued };
  },

  async oneInFlight() {
    const answers = [];
    let open = 0, most = 0;
    const p = load({
      respond: req => {
        most = Math.max(most, ++open);
        return new Promise(res => answers.push(() => { open--; res(accept(req)); }));
      },
    });
    p.init();
    const e1 = p.sdk.track('page_view');
    const first = p.sdk.flush();
    await p.clock.advance(0);
    const e2 = p.sdk.track('page_view');
    const second = p.sdk.flush();
    await p.clock.advance(5000);
    const whileInFlight = requests(p);
    answers[0]();
    await p.clock.advance(0);
    const afterFirst = requests(p);
    answers[1]();
    const done = plain(await first);
    await second;
    return { e1, e2, whileInFlight, afterFirst, most, done, stats: plain(p.sdk.stats()) };
  },

  async retryAfter() {
    let n = 0;
    const p = load({
      respond: req => (n++ === 0 ? response(503, { error: 'broker_unavailable' }, { 'Retry-After': '2' }) : accept(req)),
      random: [0.5],
    });
    p.init();
    const sent = [p.sdk.track('page_view'), p.sdk.track('page_view')];
    await p.clock.advance(1000);
    const first = requests(p);
    const statsAfter503 = plain(p.sdk.stats());
    await p.clock.advance(1999);
    const at2999 = requests(p);
    await p.clock.advance(1);
    return {
      sent, first, statsAfter503, at2999, all: requests(p), stats: plain(p.sdk.stats()),
      flushes: p.flushes.map(f => ({ status: f.status, accepted: f.accepted, retryIn: f.retryIn, ids: ids(f.events) })),
      queueKey: p.storage.getItem('inboxflow.queue'),
    };
  },

  async backoff() {
    const randoms = [0.1, 0.9, 0.5, 0.25, 0.75, 1 - 1e-9, 0.999, 0.5, 0.2, 0.6];
    let fail = true;
    const p = load({ respond: req => (fail ? 'network' : accept(req)), random: [...randoms, 0.5] });
    p.init();
    p.sdk.track('page_view');
    await p.clock.advance(1000); // first attempt
    for (let i = 0; i < randoms.length; i++) await p.clock.advance(p.clock.pending()[0] - p.clock.now);
    const failed = requests(p);
    const stats = plain(p.sdk.stats());
    fail = false;
    await p.clock.advance(p.clock.pending()[0] - p.clock.now);
    const recovered = plain(p.sdk.stats());
    // after a success the backoff starts again at 500 ms
    fail = true;
    p.sdk.track('page_view');
    await p.clock.advance(1000);
    const t = p.clock.now;
    return { randoms, failed, stats, recovered, next: p.clock.pending()[0] - t, lastRandom: 0.5 };
  },

  async badRequest() {
    // one invalid event: dropped, never sent again
    const a = load({
      respond: () => response(400, { error: 'invalid_event', errors: [
        { index: 0, reason: 'schema_violation', path: '$.properties.product_id', message: 'is required' }] }),
    });
    a.init();
    const bad = a.sdk.track('product_view', {});
    await a.clock.advance(1000);
    await a.clock.advance(60000);
    // two events, the second invalid: the batch was all-or-nothing, so the first goes again
    const b = load({
      respond: req => (req.body.batch.length === 2
        ? response(400, { error: 'invalid_event', errors: [{ index: 1, reason: 'bad_currency', path: '$.properties.currency', message: 'm' }] })
        : accept(req)),
    });
    b.init();
    const good = b.sdk.track('product_view', { product_id: 'p-1' });
    const invalid = b.sdk.track('product_view', { product_id: 'p-2', currency: 'XXX' });
    await b.clock.advance(1000);
    const afterFirst = { requests: requests(b), queue: queueIds(b) };
    await b.clock.advance(1000);
    await b.clock.advance(60000);
    // a 400 without per-event errors (the body as a whole): the batch is dropped
    const c = load({ respond: () => response(400, { error: 'empty_batch', message: 'm' }) });
    c.init();
    c.sdk.track('page_view');
    c.sdk.track('page_view');
    await c.clock.advance(61000);
    return {
      single: { bad, requests: requests(a), queueKey: a.storage.getItem('inboxflow.queue'),
        stats: plain(a.sdk.stats()), warn: plain(a.warn), flushes: a.flushes.map(f => ({ status: f.status, rejected: f.rejected })) },
      partial: { good, invalid, afterFirst, requests: requests(b), queueKey: b.storage.getItem('inboxflow.queue'),
        stats: plain(b.sdk.stats()), warn: plain(b.warn) },
      whole: { requests: requests(c).map(r => r.ids.length), queued: c.sdk.stats().queued },
    };
  },

  async unauthorized() {
    const out = {};
    for (const status of [401, 403]) {
      const p = load({ respond: () => response(status, { error: 'unauthorized' }) });
      p.init();
      p.sdk.track('page_view');
      await p.clock.advance(61000);
      out[status] = { requests: p.requests.length, queued: p.sdk.stats().queued, error: p.error.length, retries: p.sdk.stats().retries };
    }
    return out;
  },

  async tooLarge() {
    const p = load({ respond: req => (req.body.batch.length > 1 ? response(413, { error: 'body_too_large' }) : accept(req)) });
    p.init();
    const sent = [p.sdk.track('page_view'), p.sdk.track('page_view')];
    await p.clock.advance(1000);
    const split = { requests: requests(p), queued: p.sdk.stats().queued, stats: plain(p.sdk.stats()) };
    const q = load({ respond: () => response(413, { error: 'body_too_large' }) });
    q.init();
    const alone = q.sdk.track('page_view');
    await q.clock.advance(61000);
    return { sent, split, alone: { id: alone, requests: requests(q), queued: q.sdk.stats().queued, error: q.error } };
  },

  async overflow() {
    const p = load();
    p.init({ maxQueue: 3 });
    const sent = [1, 2, 3, 4, 5].map(() => p.sdk.track('page_view'));
    const queue = queueIds(p);
    const stats = plain(p.sdk.stats());
    await p.clock.advance(1000);
    return { sent, queue, stats, warn: p.warn.length, requests: requests(p) };
  },

  async beacon() {
    const storage = new Storage();
    const a = load({ storage, respond: () => 'network' });
    a.init();
    const sent = [a.sdk.track('page_view'), a.sdk.track('cart_add', { product_id: 'p-1', price: 1 })];
    a.document.visibilityState = 'hidden';
    a.dispatch('document', 'visibilitychange');
    const beacons = await Promise.all(a.beacons.map(async b => ({
      url: b.url, type: b.blob.type, body: JSON.parse(await b.blob.text()) })));
    const queued = storage.queue();
    a.dispatch('window', 'pagehide'); // already beaconed: not again
    const beaconsAfterPagehide = a.beacons.length;
    // next page load: the same storage; fetch sends them again and the collector accepts
    const b = load({ storage, clock: new Clock() });
    b.init();
    await b.clock.advance(1000);
    return {
      sent, beacons, queued, beaconsAfterPagehide, fetchedBeforeHide: a.requests.length,
      resent: b.requests.map(r => r.body), queueKey: storage.getItem('inboxflow.queue'),
    };
  },

  async beaconRefused() {
    const a = load({ beacon: () => false });
    a.init();
    a.sdk.track('page_view');
    a.dispatch('window', 'pagehide');
    const b = load({ beacon: null });
    b.init();
    b.sdk.track('page_view');
    b.dispatch('window', 'pagehide');
    return { refused: { beacons: a.beacons.length, queue: a.storage.queue() },
      missing: { queue: b.storage.queue() } };
  },

  async beaconChunks() {
    const p = load();
    p.init();
    const big = 'x'.repeat(20000);
    const sent = [1, 2, 3, 4, 5].map(i => p.sdk.track('page_view', { title: big + i }));
    p.dispatch('window', 'pagehide');
    const chunks = await Promise.all(p.beacons.map(async b => {
      const text = await b.blob.text();
      return { bytes: b.blob.size, ids: ids(JSON.parse(text).batch) };
    }));
    return { sent, chunks, marked: p.storage.queue().map(e => e.beacon === true) };
  },

  async reload() {
    const storage = new Storage();
    const a = load({ storage });
    a.init();
    const sent = [a.sdk.track('page_view'), a.sdk.track('page_view')];
    await a.clock.advance(500); // navigation before the first flush
    const b = load({ storage });
    b.init();
    const queued = b.sdk.stats().queued;
    await b.clock.advance(1000);
    return { sent, fetchedBefore: a.requests.length, queued, requests: requests(b), after: b.sdk.stats().queued };
  },

  async storageFallback() {
    const p = load({ localStorage: 'throws' });
    p.init();
    const id = p.sdk.track('page_view');
    const user = plain(p.sdk.user());
    const queued = p.sdk.stats().queued;
    await p.clock.advance(1000);
    return { id, user, queued, requests: requests(p), error: p.error };
  },

  async explicitStorage() {
    const p = load({ explicitStorage: true });
    p.init();
    p.sdk.track('page_view');
    return { queued: (p.storage.queue() || []).length };
  },

  async noWriteKey() {
    const p = load();
    p.sdk.init({ writeKey: '' });
    const tracked = p.sdk.track('page_view');
    await p.clock.advance(5000);
    const q = load({ config: { writeKey: 'from-config', endpoint: 'https://c.example.com' } });
    q.sdk.init();
    q.sdk.track('page_view');
    await q.clock.advance(1000);
    return { error: p.error, tracked: tracked === undefined ? null : tracked, requests: p.requests.length,
      configUrl: q.requests.map(r => r.url) };
  },

  async uuidFallback() {
    const p = load({ crypto: { getRandomValues: a => { for (let i = 0; i < a.length; i++) a[i] = i * 17; return a; } } });
    p.init();
    return { id: p.sdk.track('page_view'), anonymous: p.sdk.user().anonymous_id };
  },

  async truncation() {
    const p = load();
    p.init();
    p.document.title = 't'.repeat(600);
    p.sdk.page();
    const e = p.storage.queue()[0];
    return { title: e.properties.title.length, url: e.properties.url, referrer: e.properties.referrer };
  },
};

const out = {};
let current = null;
// A scenario awaiting a promise that never settles leaves node with nothing to do: it
// exits without reaching the end of main(). Say which scenario that was.
process.on('exit', () => {
  if (current !== null) {
    out[current] = { error: 'scenario never finished: it awaited a promise that never settled' };
    process.stdout.write(JSON.stringify(out));
  }
});

async function main() {
  const names = process.argv.slice(2);
  for (const name of names.length ? names : Object.keys(scenarios)) {
    current = name;
    uuidCount = 0;
    try {
      if (!scenarios[name]) throw new Error('no scenario ' + name);
      out[name] = await scenarios[name]();
    } catch (e) {
      out[name] = { error: String((e && e.stack) || e) };
    }
  }
  current = null;
  process.stdout.write(JSON.stringify(out));
}

main();
