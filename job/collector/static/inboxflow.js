/* inboxflow.js: the browser snippet of inboxflow (no build step, no dependencies).
 * Queues events and POSTs them in batches, {"batch": [...]}, to
 * <endpoint>/v1/events?write_key=KEY as text/plain (CORS-safelisted: no preflight).
 * localStorage keys (in memory if localStorage throws):
 *   inboxflow.anonymous_id  "anon-<uuid>", made on first use, replaced by reset()
 *   inboxflow.customer_id   set by identify(), removed by reset()
 *   inboxflow.queue         unsent events (survive a navigation; shared by tabs)
 * Events before identify() carry the anonymous id as customer_id. Merging the anonymous
 * history into the customer is not done yet: until then the anonymous profile keeps its
 * own views/cart in the job and gets no email (it has no address); identify() (like every
 * event) carries context.anonymous_id so a later merge step can link the two.
 * API: init(options), track(type, props), page(props), identify(id, traits), reset(),
 * flush() -> Promise, stats(), user(); options.onFlush({status, accepted, events,
 * rejected, retryIn}) after each request (status 0: network error). */
(() => {
  'use strict';
  const w = window, K = 'inboxflow.', LIMIT = 60000; // keepalive/beacon quota: 64 KiB
  const TYPE = 'text/plain;charset=UTF-8';
  const st = { sent: 0, dropped: 0, retries: 0, lastStatus: null };
  let o, store, timer = null, busy = Promise.resolve(), running = false, wait = null, fails = 0;

  const mem = (m = {}) => ({ getItem: k => (k in m ? m[k] : null),
    setItem: (k, v) => { m[k] = '' + v; }, removeItem: k => { delete m[k]; } });
  const get = k => { try { return store.getItem(K + k); } catch (e) { return null; } };
  const set = (k, v) => {
    try { v == null ? store.removeItem(K + k) : store.setItem(K + k, v); } catch (e) {
      const m = mem(); // quota exceeded or storage revoked: carry on in memory
      for (const x of ['anonymous_id', 'customer_id', 'queue']) { const v = get(x); if (v != null) m.setItem(K + x, v); }
      store = m; set(k, v);
    }
  };
  const uuid = () => { // randomUUID: secure contexts only
    const c = w.crypto;
    if (c.randomUUID) return c.randomUUID();
    const b = c.getRandomValues(new Uint8Array(16));
    b[6] = (b[6] & 15) | 64; b[8] = (b[8] & 63) | 128;
    return Array.from(b, x => (x + 256).toString(16).slice(1)).join('')
      .replace(/(.{8})(.{4})(.{4})(.{4})/, '$1-$2-$3-$4-');
  };
  const anon = () => get('anonymous_id') || (set('anonymous_id', 'anon-' + uuid()), get('anonymous_id'));
  const load = () => {
    try { const q = JSON.parse(get('queue')); return Array.isArray(q) ? q : []; } catch (e) { return []; }
  };
  const save = q => set('queue', q.length ? JSON.stringify(q) : null);
  const cut = (s, n) => String(s == null ? '' : s).slice(0, n); // the schemas' maxLength
  const size = s => new TextEncoder().encode(s).length;
  const url = () => o.endpoint + '/v1/events?write_key=' + encodeURIComponent(o.writeKey);
  const body = b => JSON.stringify({ batch: b.map(e => Object.assign({}, e, { beacon: undefined })) });
  const remove = b => {
    const ids = new Set(b.map(e => e.event_id));
    save(load().filter(e => !ids.has(e.event_id)));
  };
  const later = ms => {
    clearTimeout(timer);
    timer = setTimeout(() => { timer = null; if (load().length) flush(); }, ms);
  };
  const need = () => { if (!o) console.error('inboxflow: call init() first'); return !!o; };
  const notify = i => { try { o.onFlush && o.onFlush(i); } catch (e) { console.error(e); } };

  function ev(type, properties, traits) {
    if (!need()) return;
    const a = anon(), l = w.location || {}, d = w.document || {}, n = w.navigator || {};
    const e = { event_id: uuid(), event_type: type, customer_id: get('customer_id') || a,
      timestamp: new Date().toISOString(), properties: properties || {},
      context: { page: { url: l.href, path: l.pathname, title: d.title, referrer: d.referrer },
        user_agent: cut(n.userAgent, 1024), locale: cut(n.language, 35), anonymous_id: a } };
    if (traits) e.traits = traits;
    const q = load(), over = q.push(e) - o.maxQueue;
    if (over > 0) { // bounded storage: drop the oldest
      q.splice(0, over); st.dropped += over;
      console.warn('inboxflow: queue full, dropped the ' + over + ' oldest event(s)');
    }
    save(q);
    if (q.length >= o.maxBatch && !running && wait == null) flush();
    else if (!timer && !running) later(o.flushInterval);
    return e.event_id;
  }

  async function post(batch) { // true: on to the next batch; false: retry later
    const b = body(batch), info = { events: batch, accepted: 0, rejected: [] };
    let r, s = 0, bad = batch;
    try {
      r = await w.fetch(url(), { method: 'POST', body: b, headers: { 'Content-Type': TYPE },
        keepalive: size(b) <= LIMIT }); // a larger keepalive body is refused
      s = r.status;
    } catch (e) { /* network error: status 0 */ }
    st.lastStatus = info.status = s;
    if (s >= 200 && s < 300) {
      remove(batch); st.sent += info.accepted = batch.length; fails = 0;
    } else if (s === 413 && batch.length > 1) { // too large: halves
      notify(info); fails = 0;
      const h = Math.ceil(batch.length / 2);
      return (await post(batch.slice(0, h))) && post(batch.slice(h));
    } else if (s < 400 || s === 408 || s === 429 || s >= 500) { // backoff with full jitter
      const ra = r && +r.headers.get('Retry-After'); // seconds
      wait = Math.max(ra > 0 ? ra * 1000 : 0, Math.random() * Math.min(30000, 500 * 2 ** fails++));
      st.retries++; info.retryIn = wait;
      notify(info);
      return false;
    } else if (s === 400) { // nothing of the batch was stored; the events named never pass
      let errs;
      try {
        errs = (await r.json()).errors.map(x => ({ index: x.index, reason: x.reason, path: x.path }));
      } catch (e) { errs = []; }
      const idx = errs.map(x => x.index); // the others go again on the next tick
      if (idx.length && idx.every(i => Number.isInteger(i) && batch[i])) {
        bad = batch.filter((e, i) => idx.includes(i));
      }
      console.warn('inboxflow: 400, dropped ' + bad.length + ' invalid event(s)', errs);
    } else console.error('inboxflow: ' + s + ', dropped ' + bad.length + ' event(s): a retry cannot succeed');
    if (s >= 400) { remove(bad); info.rejected = bad.map(e => e.event_id); fails = 0; }
    notify(info);
    return true;
  }

  async function drain() {
    clearTimeout(timer); timer = null; wait = null; running = true;
    const seen = new Set(); // each event is attempted once per drain
    try {
      for (let b; (b = load().filter(e => !seen.has(e.event_id)).slice(0, o.maxBatch)).length;) {
        b.forEach(e => seen.add(e.event_id));
        if (!(await post(b))) break;
      }
    } finally {
      running = false;
      if (load().length) later(wait == null ? o.flushInterval : wait);
    }
    return stats();
  }
  // one request in flight: drains run one after the other
  const flush = () => (need() ? (busy = busy.then(drain, drain)) : Promise.resolve(stats()));

  // Page hide: a beacon gives no answer, so beaconed events stay queued marked beacon:true
  // and fetch sends them again (next tick or next page load); the job drops the second copy
  // by event_id (its dedup). No sendBeacon, or it refuses (quota): they just stay queued.
  function beacon() {
    const n = w.navigator, q = load(), chunks = [];
    if (!o || !n || !n.sendBeacon) return;
    let c = [], bytes = 12;
    for (const e of q) {
      const s = size(JSON.stringify(e)) + 1;
      if (e.beacon || s + 12 > LIMIT) continue; // one event over the limit: left to fetch
      if (c.length && (bytes + s > LIMIT || c.length >= o.maxBatch)) { chunks.push(c); c = []; bytes = 12; }
      c.push(e); bytes += s;
    }
    if (c.length) chunks.push(c);
    for (const b of chunks) {
      try { if (!n.sendBeacon(url(), new Blob([body(b)], { type: TYPE }))) break; } catch (e) { break; }
      b.forEach(e => { e.beacon = true; });
    }
    save(q);
  }

  function stats() { return Object.assign({ queued: o ? load().length : 0 }, st); }

  w.inboxflow = {
    init(options) {
      if (o) return console.warn('inboxflow: init() called twice, ignored');
      const c = Object.assign({ endpoint: '', flushInterval: 1000, maxBatch: 50, maxQueue: 500 },
        w.inboxflowConfig, options);
      if (!c.writeKey) return console.error('inboxflow: init() needs a writeKey');
      c.endpoint = ('' + (c.endpoint || '')).replace(/\/+$/, '');
      c.maxBatch = Math.min(c.maxBatch, 500); // the collector's limit
      try { // Safari private mode, blocked cookies: in memory
        store = c.storage || w.localStorage; store.setItem(K + 'probe', 1); store.removeItem(K + 'probe');
      } catch (e) { store = mem(); }
      o = c; anon();
      if (load().length) later(c.flushInterval);
      const d = w.document;
      d && d.addEventListener('visibilitychange', () => d.visibilityState === 'hidden' && beacon());
      w.addEventListener('pagehide', beacon);
    },
    track: (type, properties) => ev(type, properties),
    page(properties) {
      const l = w.location || {}, d = w.document || {};
      const p = { url: cut(l.href, 2048), path: cut(l.pathname, 2048), title: cut(d.title, 512) };
      if (d.referrer) p.referrer = cut(d.referrer, 2048);
      return ev('page_view', Object.assign(p, properties));
    },
    identify(id, traits) {
      id = typeof id === 'string' ? id.trim() : '';
      if (!id || id.length > 128) return console.error('inboxflow: identify() needs an id of 1-128 chars');
      if (need()) return set('customer_id', id), ev('identify', {}, traits || {});
    },
    reset() { if (need()) set('customer_id', null), set('anonymous_id', 'anon-' + uuid()); },
    flush,
    stats,
    user: () => (o ? { anonymous_id: anon(), customer_id: get('customer_id') } : null),
  };
})();
