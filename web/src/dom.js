// Small DOM helpers. Every API string reaches the page as a text node (never
// as HTML), so nothing the server returns can inject markup or script.

// h('tag.class#id', {attr: value, onclick: fn}, ...children)
export function h(spec, attrs, ...children) {
  const [, tag = 'div', rest = ''] = /^([a-z0-9]*)(.*)$/i.exec(spec);
  const el = document.createElement(tag || 'div');
  for (const part of rest.match(/[.#][^.#]+/g) || []) {
    if (part[0] === '.') el.classList.add(part.slice(1));
    else el.id = part.slice(1);
  }
  if (attrs && (typeof attrs !== 'object' || attrs instanceof Node || Array.isArray(attrs))) {
    children.unshift(attrs);
    attrs = null;
  }
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === undefined || c === null || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

// Replaces the children of `el`.
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export function fmtBytes(n) {
  if (n === undefined || n === null || Number.isNaN(n)) return '–';
  const units = ['B', 'kB', 'MB', 'GB', 'TB'];
  let i = 0;
  let v = Number(n);
  while (Math.abs(v) >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? v : v.toFixed(1)} ${units[i]}`;
}

export function fmtDuration(ms) {
  if (ms === undefined || ms === null || ms < 0) return '';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(1)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${Math.round(s - m * 60)} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

export function fmtTime(msOrIso) {
  if (msOrIso === undefined || msOrIso === null || msOrIso === '') return '';
  const d = new Date(msOrIso);
  if (Number.isNaN(d.getTime())) return String(msOrIso);
  return d.toLocaleTimeString([], { hour12: false });
}

export function fmtDateTime(msOrIso) {
  if (msOrIso === undefined || msOrIso === null || msOrIso === '') return '';
  const d = new Date(msOrIso);
  if (Number.isNaN(d.getTime())) return String(msOrIso);
  return `${d.toISOString().slice(0, 10)} ${d.toLocaleTimeString([], { hour12: false })}`;
}

// A maintenance window ({days:[sat,sun], start:"02:00", end:"05:00",
// timezone:"UTC"}) as "sat,sun 02:00–05:00 UTC"; other shapes as key=value.
export function fmtWindow(w) {
  if (!w || typeof w !== 'object') return '';
  if (w.start && w.end) {
    const days = Array.isArray(w.days) ? w.days.join(',') : (w.days ?? '');
    return [days, `${w.start}–${w.end}`, w.timezone ?? ''].filter(Boolean).join(' ');
  }
  return Object.entries(w).map(([k, v]) => `${k}=${typeof v === 'object' ? JSON.stringify(v) : v}`).join(' ');
}

// A migration's phase and, when it says more, its state.
export function phaseBadges(phase, state) {
  return [badge(phase, 'phase'), state && state !== phase ? [' ', badge(state)] : null];
}

// A state/phase/severity label styled by its value.
export function badge(text, kind = text) {
  return h(`span.badge.b-${String(kind).replace(/[^a-z_]/gi, '')}`, text);
}
