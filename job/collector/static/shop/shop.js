/* inboxflow demo shop: a static storefront that sends real events through the snippet
 * (window.inboxflow, configured by /shop/config.js). Nothing here loads from the network
 * except the collector itself: the catalog's image URLs go into the events only, the page
 * shows a coloured placeholder instead. */
(() => {
  'use strict';
  // The first 4 lines of conf/catalog.jsonl (tests/unit/test_snippet.py checks they match).
  const PRODUCTS = [
    {"product_id": "p-0001", "name": "Lavender Face Oil", "category": "Beauty", "price": 31.99, "currency": "EUR", "image_url": "https://cdn.example.com/img/p-0001.jpg", "url": "https://shop.example.com/p/p-0001"},
    {"product_id": "p-0002", "name": "Collected Cookbook", "category": "Books", "price": 14.99, "currency": "EUR", "image_url": "https://cdn.example.com/img/p-0002.jpg", "url": "https://shop.example.com/p/p-0002"},
    {"product_id": "p-0003", "name": "Salt & Pepper Mill Set", "category": "Kitchen", "price": 75.99, "currency": "EUR", "image_url": "https://cdn.example.com/img/p-0003.jpg", "url": "https://shop.example.com/p/p-0003"},
    {"product_id": "p-0004", "name": "Folding Planter", "category": "Garden", "price": 147.99, "currency": "EUR", "image_url": "https://cdn.example.com/img/p-0004.jpg", "url": "https://shop.example.com/p/p-0004"}
  ];
  const byId = new Map(PRODUCTS.map(p => [p.product_id, p]));
  const $ = s => document.querySelector(s);
  const sdk = window.inboxflow;
  const hex = n => Array.from(crypto.getRandomValues(new Uint8Array(n)), b => b.toString(16).padStart(2, '0')).join('');
  const session = {
    get(k) { try { return JSON.parse(sessionStorage.getItem(k)); } catch (e) { return null; } },
    set(k, v) { try { sessionStorage.setItem(k, JSON.stringify(v)); } catch (e) { /* private mode */ } },
  };
  const round = v => Math.round(v * 100) / 100;
  const money = (v, currency) => {
    try { return new Intl.NumberFormat($('#locale').value, { style: 'currency', currency }).format(v); }
    catch (e) { return v.toFixed(2) + ' ' + currency; }
  };
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    Object.entries(attrs || {}).forEach(([k, v]) => e.setAttribute(k, v));
    e.append(...children);
    return e;
  }

  // --- the event log ------------------------------------------------------------------
  function log(eventId, type, detail) {
    if (!eventId) return; // the snippet refused (see the console)
    const time = new Date().toLocaleTimeString();
    $('#log').append(el('li', { 'data-event-id': eventId, 'data-event-type': type, 'data-status': 'queued' },
      el('span', { class: 'time' }, time), ' ', el('strong', {}, type), ' ' + (detail || '')));
  }
  const send = (type, properties, detail) => log(sdk.track(type, properties), type, detail);

  function onFlush(info) {
    const s = info.status || 'network error';
    let text, mark;
    if (info.status >= 200 && info.status < 300) { text = `${s} accepted ${info.accepted}`; mark = 'accepted'; }
    else if (info.retryIn != null) { text = `retrying in ${(info.retryIn / 1000).toFixed(1)} s (${s})`; mark = 'retrying'; }
    else if (info.status === 413 && !info.rejected.length) { text = `413 too large: splitting ${info.events.length} events`; }
    else { text = `${s} rejected ${info.rejected.length}`; }
    $('#flush-status').textContent = text;
    $('#flush-status').dataset.status = String(info.status);
    for (const e of info.events) {
      const li = $(`#log li[data-event-id="${e.event_id}"]`);
      if (!li) continue;
      if (info.rejected.includes(e.event_id)) li.dataset.status = 'rejected';
      else if (mark) li.dataset.status = mark;
    }
  }

  // --- the customer -------------------------------------------------------------------
  function showWho() {
    const u = sdk.user();
    $('#who').textContent = !u ? 'The snippet is not initialised (no write key?)'
      : u.customer_id ? `Signed in as ${u.customer_id}` : `Anonymous (${u.anonymous_id})`;
    document.body.dataset.signedIn = String(!!(u && u.customer_id));
  }
  let autoEmail = '';
  function defaultCustomer() {
    const id = 'demo-' + hex(3);
    $('#customer-id').value = id;
    $('#email').value = autoEmail = id + '@example.com';
  }
  $('#customer-id').addEventListener('input', () => {
    if ($('#email').value === autoEmail) $('#email').value = autoEmail = $('#customer-id').value.trim() + '@example.com';
  });
  $('#sign-in-form').addEventListener('submit', ev => {
    ev.preventDefault();
    const id = $('#customer-id').value.trim();
    const traits = { email: $('#email').value.trim(), first_name: $('#first-name').value.trim(), locale: $('#locale').value };
    log(sdk.identify(id, traits), 'identify', `${id} <${traits.email}>`);
    showWho();
  });
  $('#sign-out').addEventListener('click', () => { sdk.reset(); showWho(); });
  $('#locale').addEventListener('change', () => { renderProducts(); renderCart(); });

  // --- products and cart --------------------------------------------------------------
  let cartId = session.get('shop.cart_id');
  let cart = session.get('shop.cart') || []; // [{product_id, quantity}]
  const newCart = () => { cartId = 'cart-' + hex(6); cart = []; saveCart(); };
  const saveCart = () => { session.set('shop.cart_id', cartId); session.set('shop.cart', cart); };
  if (!cartId) newCart();
  cart = cart.filter(l => byId.has(l.product_id));

  const lines = () => cart.map(l => {
    const p = byId.get(l.product_id);
    return { product_id: p.product_id, quantity: l.quantity, price: p.price, currency: p.currency, name: p.name, category: p.category };
  });
  const total = () => round(lines().reduce((sum, l) => sum + l.price * l.quantity, 0));
  const currency = () => (cart.length ? byId.get(cart[0].product_id).currency : PRODUCTS[0].currency);

  function renderProducts() {
    $('#grid').replaceChildren(...PRODUCTS.map(p => el('li', { class: 'card' },
      el('div', { class: 'placeholder', 'data-category': p.category, 'aria-hidden': 'true' }, p.name[0]),
      el('h3', {}, p.name),
      el('p', { class: 'meta' }, `${p.category} · ${money(p.price, p.currency)}`),
      el('div', { class: 'buttons' },
        el('button', { type: 'button', 'data-view': p.product_id, 'aria-label': `View ${p.name}` }, 'View'),
        el('button', { type: 'button', 'data-add': p.product_id, 'aria-label': `Add ${p.name} to cart` }, 'Add to cart')))));
  }

  function renderCart() {
    $('#cart-id').textContent = cartId;
    $('#cart-items').replaceChildren(...lines().map(l => el('li', { 'data-product-id': l.product_id },
      `${l.quantity} × ${l.name} `, el('span', { class: 'meta' }, money(round(l.price * l.quantity), l.currency)), ' ',
      el('button', { type: 'button', 'data-remove': l.product_id, 'aria-label': `Remove ${l.name}` }, 'Remove'))));
    $('#cart-empty').hidden = cart.length > 0;
    $('#cart-total').textContent = money(total(), currency());
    $('#checkout').disabled = $('#buy').disabled = !cart.length;
  }

  $('#grid').addEventListener('click', ev => {
    const b = ev.target.closest('button');
    if (!b) return;
    const p = byId.get(b.dataset.view || b.dataset.add);
    if (!p) return;
    if (b.dataset.view) {
      send('product_view', { product_id: p.product_id, name: p.name, category: p.category, price: p.price,
        currency: p.currency, image_url: p.image_url, url: p.url }, p.product_id);
    } else {
      send('cart_add', { product_id: p.product_id, name: p.name, price: p.price, currency: p.currency,
        category: p.category, image_url: p.image_url, quantity: 1, cart_id: cartId }, p.product_id);
      const line = cart.find(l => l.product_id === p.product_id);
      if (line) line.quantity += 1; else cart.push({ product_id: p.product_id, quantity: 1 });
      saveCart(); renderCart();
    }
  });
  $('#cart-items').addEventListener('click', ev => {
    const b = ev.target.closest('button[data-remove]');
    if (!b) return;
    send('cart_remove', { product_id: b.dataset.remove, cart_id: cartId }, b.dataset.remove);
    cart = cart.filter(l => l.product_id !== b.dataset.remove);
    saveCart(); renderCart();
  });
  $('#checkout').addEventListener('click', () => {
    if (!cart.length) return;
    send('checkout_start', { cart_id: cartId, value: total(), currency: currency(), items: lines() },
      money(total(), currency()));
  });
  $('#buy').addEventListener('click', () => {
    if (!cart.length) return;
    const orderId = 'o-' + hex(6);
    send('purchase', { order_id: orderId, revenue: total(), currency: currency(), cart_id: cartId, items: lines() },
      `${orderId} ${money(total(), currency())}`);
    newCart(); renderCart();
  });
  $('#flush').addEventListener('click', () => { if (sdk) sdk.flush(); });

  // --- start --------------------------------------------------------------------------
  defaultCustomer();
  renderProducts();
  renderCart();
  if (!sdk) {
    $('#flush-status').textContent = 'the snippet did not load (/snippet/inboxflow.js)';
    return;
  }
  sdk.init({ onFlush });
  showWho();
  log(sdk.page(), 'page_view', location.pathname);
})();
