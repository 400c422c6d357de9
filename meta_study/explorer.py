"""The report's interactive view: any group's models, zoomable, with each model's name.

The static hover SVGs of the report stop at the first groups (every point is a DOM element in the
page). This view holds every group in one compact JSON block (model names once, in a string
table; accuracies in points with 2 decimals: ~21 bytes a point) and draws the chosen group into
one SVG with a few dozen lines of inline script: pick a group, scroll to zoom at the cursor, drag
to pan, double-click to reset, type part of a model's name or run id to mark its points. A legend
says what the marks the group has mean; the count of models (or of matches) and the hovered model
have lines of their own. The keyboard reaches it too: Tab to the plot, the arrow keys step through
the models in view (the matches while searching; Page Up/Down along the frontier), each named on the
hover line, which a screen reader reads out; + and - zoom, 0 resets. Only the models in view are
drawn, one SVG circle each up to 3,000; beyond, as the pixels of two images with only the frontier's
models as circles (a search in a group of 150,000 redraws in ~0.1-0.3 s, not 1.5-4 s; a wheel gesture or
a drag over a group beyond 3,000 models draws at most once a frame, its latest view, not every event in turn).
Points are named by :func:`point_name` (the store's model name, not a 32-digit run id). The red
line is the headline's prediction from the best visible model to the tested horizon, shaded by
its interval at the row's level, as in the figures; its legend says "(not trusted)" where the
headline is not (the figures say it in each panel's title).
Nothing is loaded from the network; without script the static views and figures remain.

Size: a page embeds at most :data:`MAX_POINTS` points (~5 MB: 5.3 MB measured, with 5,000 names;
a whole 32-digit run id beside a name that holds only its first 8 digits adds ~35 bytes a name); a
larger analysis embeds the groups that fit in that, in order, and names those it left out with
their counts (points.parquet holds them all).
"""

from __future__ import annotations

import html
import json
import math
import os
from typing import Any

import numpy as np
import pandas as pd

from .schema import GROUP

#: Points embedded in one page at most (~21 bytes each in the JSON block: ``[61.23,45.67,1234,0],``).
MAX_POINTS = 250_000
KEYS = list(GROUP)

CSS = """
.explore select,.explore input{font-size:.85rem;margin:.2rem .4rem .2rem 0} .explore .info{font-size:.85rem;color:#333}
svg.explore{border:1px solid #eee;touch-action:none;cursor:grab;max-width:100%;height:auto}
svg.explore .ax{stroke:#999} svg.explore .tk{font-size:10px;fill:#555} svg.explore .lb{font-size:11px;fill:#333}
svg.explore circle.v{fill:#3a6ea5;fill-opacity:.5} svg.explore circle.h{fill:none;stroke:#3a6ea5}
svg.explore circle.hit{fill:#e67e22;fill-opacity:1;stroke:#000;stroke-width:.6}
svg.explore circle:hover{fill:#e67e22;fill-opacity:1}
svg.explore circle.cur{fill:none;stroke:#000;stroke-width:1.5;pointer-events:none} svg.explore:focus-visible{outline:2px solid #3a6ea5} svg.explore .law{fill:none;stroke:#c0392b;stroke-width:1.6}
svg.explore .thr{stroke:#444;stroke-dasharray:4 3;opacity:.6} svg.explore .band{fill:#c0392b;fill-opacity:.15;stroke:none}
.explore .hover{font-size:.85rem;color:#333;margin-left:.8rem;font-family:ui-monospace,monospace;overflow-wrap:anywhere}
#ex-group{max-width:100%}
.ex-legend{font-size:.85rem;color:#333;margin:.2rem 0} .ex-legend>span{margin-right:1rem;display:inline-block;max-width:100%} .ex-legend>span[hidden]{display:none}
.ex-legend svg{vertical-align:middle;margin-right:.25rem} .ex-left{overflow-wrap:anywhere}
"""

# The viewer. State is the chosen group and its domain [x0, x1, y0, y1] in accuracy points; the
# domain drawn is mirrored in data-domain (for tests and for anyone scripting the page; during a wheel
# gesture or a drag over a group beyond 3,000 models it is drawn at the next frame, see redraw).
JS = r"""
(() => {
const D = JSON.parse(document.getElementById('ex-data').textContent);
const svg = document.getElementById('ex-svg'), sel = document.getElementById('ex-group');
const find = document.getElementById('ex-find'), info = document.getElementById('ex-info');
const hover = document.getElementById('ex-hover');
// what a search is matched against, lowercased once: a model's name and its whole run id (a 32-digit
// MLflow id pasted from the tracking UI matched nothing: the name holds its first 8 digits)
const low = D.names.map((n, i) => (n + ' ' + ((D.ids || [])[i] || '')).toLowerCase());
const NS = 'http://www.w3.org/2000/svg', W = 760, H = 460, L = 52, B = 44, T = 12, R = 14;
// One SVG circle per model in view up to SVG_MOST; beyond, the models are pixels of two images drawn
// on a canvas (the unmarked ones under the prediction line, the marked ones over it) and only the
// frontier's models in view (FRONT_MOST at most) stay circles with their names: 150,000 circles took
// ~1.5 s to build at every keystroke in the search box. The images' pixels are the circles' own: a
// pixel under k translucent circles is as opaque as k circles of opacity .5 over each other.
const SVG_MOST = 3000, FRONT_MOST = 400, S = Math.min(3, Math.max(1, Math.ceil(window.devicePixelRatio || 1)));
// cur: the model the keyboard is on (an index into g.p, -1: none); shown: the models in view, drawn
// as pixels, for the hover (null: every model in view is a circle with its own title)
let g = null, dom = null, drag = null, cur = -1, shown = null;
const el = (n, a, t) => { const e = document.createElementNS(NS, n);
  for (const k in a) e.setAttribute(k, a[k]); if (t !== undefined) e.textContent = t; return e; };
const ext = a => { let lo = Infinity, hi = -Infinity; for (const v of a) { if (v < lo) lo = v; if (v > hi) hi = v; } return [lo, hi]; };
const sx = v => L + (v - dom[0]) / (dom[1] - dom[0]) * (W - L - R);
const sy = v => H - B - (v - dom[2]) / (dom[3] - dom[2]) * (H - B - T);
const tip = p => `${D.names[p[2]] ?? '?'}: US ${p[0].toFixed(2)}%, DS ${p[1].toFixed(2)}%${p[3] === 1 ? ' (held out)' : ''}`;
const query = () => find.value.trim().toLowerCase();
const ticks = (lo, hi) => { const span = hi - lo, base = Math.pow(10, Math.floor(Math.log10(span / 5)));
  const step = [1, 2, 5, 10].map(m => m * base).find(s => span / s <= 7);
  if (!(step > 0) || !isFinite(step)) return [[], 0];
  // by index, at most 8: `v += step` below a value's float spacing never ended (a tab hung)
  const out = [], i0 = Math.ceil(lo / step - 1e-9);
  for (let i = i0; i * step <= hi + 1e-9 * step && out.length < 8; i++) out.push(i * step);
  return [out, step < 1 ? Math.min(3, Math.ceil(-Math.log10(step))) : 0]; };
// a domain between MIN_SPAN (points are given to 0.01 pt) and MAX_SPAN accuracy points a side: a
// few hundred wheel notches zoomed into a span of 1e-14 and the page hung in the ticks
const MIN_SPAN = 0.01, MAX_SPAN = 1000;
const zoomFactor = f => { const a = dom[1] - dom[0], b = dom[3] - dom[2];
  return Math.min(Math.max(f, MIN_SPAN / Math.min(a, b)), MAX_SPAN / Math.max(a, b)); };
const zoomAt = (x, y, f, then = draw) => { f = zoomFactor(f);
  dom = [x - (x - dom[0]) * f, x + (dom[1] - x) * f, y - (y - dom[2]) * f, y + (dom[3] - y) * f]; then(); };
// A wheel gesture or a drag over a group beyond SVG_MOST models (0.1-0.3 s a drawing of its pixels)
// fires events faster than they can be drawn: each drew in turn, and the view trailed the gesture by
// seconds. Now each event changes the state at once, and the drawing follows at most once a frame,
// of the latest state: the first event draws at once (a single notch answers at once), the rest of
// its frame at the next one, together. A group of fewer models draws at every event (a few ms).
let frame = 0, stale = false;
const redraw = () => {
  if (g.p.length <= SVG_MOST) { draw(); return; }
  if (frame) { stale = true; return; }
  draw();
  const next = () => { if (stale) { draw(); frame = requestAnimationFrame(next); } else frame = 0; };
  frame = requestAnimationFrame(next); };
function prepare() {   // once per group: the orders the arrow keys step in, the frontier, the held-out count
  if (g.ox) return;
  const n = g.p.length, by = (a, b) => (u, v) => g.p[u][a] - g.p[v][a] || g.p[u][b] - g.p[v][b] || u - v;
  g.ox = Int32Array.from({length: n}, (_, i) => i).sort(by(0, 1)); g.oy = Int32Array.from(g.ox).sort(by(1, 0));
  g.px = new Int32Array(n); g.py = new Int32Array(n); g.f = new Uint8Array(n); g.nh = 0;
  for (let k = 0; k < n; k++) { g.px[g.ox[k]] = k; g.py[g.oy[k]] = k; if (g.p[k][3] === 1) g.nh++; }
  // the frontier: each model better downstream than every model below it upstream (of models with
  // the same US accuracy, the best)
  let best = -Infinity;
  for (let k = 0; k < n; k++) { const i = g.ox[k];
    if (k + 1 < n && g.p[g.ox[k + 1]][0] === g.p[i][0]) continue;
    if (g.p[i][1] > best) { g.f[i] = 1; best = g.p[i][1]; } } }
function reset() {   // the models, the prediction line and its interval in view (as the figures' axes)
  const all = g.p.concat(g.l, g.b.map(q => [q[0], q[1]]), g.b.map(q => [q[0], q[2]])), [x0, x1] = ext(all.map(p => p[0])), [y0, y1] = ext(all.map(p => p[1]));
  const px = Math.max(0.5, 0.04 * (x1 - x0)), py = Math.max(0.5, 0.04 * (y1 - y0));
  dom = [x0 - px, x1 + px, y0 - py, y1 + py]; draw(); }
// A disc of radius r pixels as rows (dy, dx0, dx1), a ring r0 < d <= r1 as (dx, dy) pairs
const disc = r => { const o = []; for (let dy = -Math.floor(r); dy <= r; dy++) { const a = Math.floor(Math.sqrt(r * r - dy * dy)); o.push(dy, -a, a); } return new Int32Array(o); };
const ring = (r0, r1) => { const o = [];
  for (let dy = -Math.ceil(r1); dy <= r1; dy++) for (let dx = -Math.ceil(r1); dx <= r1; dx++) {
    const d = dx * dx + dy * dy; if (d > r0 * r0 && d <= r1 * r1) o.push(dx, dy); }
  return new Int32Array(o); };
const DISC = disc(3 * S), HELD = ring(2.5 * S, 3.5 * S), HIT = disc(4.5 * S), EDGE = ring(4.5 * S - Math.max(0.3 * S, 0.5), 4.5 * S + Math.max(0.3 * S, 0.5));
const EDGE_A = Math.min(1, 0.6 * S);   // the edge's 0.6 units: under a pixel wide, a pixel that dark
// One layer of models (positions ks into vx/vy/vi) as an SVG image drawn pixel by pixel (a canvas
// path of 150,000 circles took seconds to stroke); null when empty. Unmarked: each pixel as opaque as
// the translucent circles over it make it (k of opacity .5: 1 - .5^k), the held-out rings over them;
// marked: opaque circles with a black edge, in order. ~50 ms for 150,000 models.
function raster(ks, vx, vy, vi, marked) {
  if (!ks.length) return null;
  const c = document.createElement('canvas'), w = W * S, h = H * S; c.width = w; c.height = h;
  const x = c.getContext('2d');
  if (!x) return null;
  const img = x.createImageData(w, h), px = new Uint32Array(img.data.buffer);
  const rgba = (r, g, b, a) => ((a << 24) | (b << 16) | (g << 8) | r) >>> 0;   // little-endian, as browsers are
  const dots = (X, Y, off, colour) => { for (let j = 0; j < off.length; j += 2) { const u = X + off[j], v = Y + off[j + 1];
    if (u >= 0 && u < w && v >= 0 && v < h) px[v * w + u] = colour; } };
  if (marked) {
    const fill = rgba(230, 126, 34, 255), edge = rgba(...[230, 126, 34].map(v => Math.round(v * (1 - EDGE_A))), 255);
    for (const k of ks) { const X = Math.round(vx[k] * S), Y = Math.round(vy[k] * S);
      for (let j = 0; j < HIT.length; j += 3) { const v = Y + HIT[j]; if (v < 0 || v >= h) continue;
        const u0 = Math.max(0, X + HIT[j + 1]), u1 = Math.min(w - 1, X + HIT[j + 2]); if (u0 <= u1) px.fill(fill, v * w + u0, v * w + u1 + 1); }
      dots(X, Y, EDGE, edge); }
  } else {
    const cnt = new Uint32Array(w * h), rings = [];
    for (const k of ks) { if (g.p[vi[k]][3] === 1) { rings.push(k); continue; }
      const X = Math.round(vx[k] * S), Y = Math.round(vy[k] * S);
      for (let j = 0; j < DISC.length; j += 3) { const v = Y + DISC[j]; if (v < 0 || v >= h) continue;
        const u1 = v * w + Math.min(w - 1, X + DISC[j + 2]);
        for (let i = v * w + Math.max(0, X + DISC[j + 1]); i <= u1; i++) cnt[i]++; } }
    const lut = Array.from({length: 17}, (_, n) => rgba(58, 110, 165, Math.round(255 * (1 - 0.5 ** n))));
    for (let j = 0; j < cnt.length; j++) if (cnt[j]) px[j] = lut[Math.min(16, cnt[j])];
    const held = rgba(58, 110, 165, 255);
    for (const k of rings) dots(Math.round(vx[k] * S), Math.round(vy[k] * S), HELD, held);
  }
  x.putImageData(img, 0, 0);
  return el('image', {x: 0, y: 0, width: W, height: H, href: c.toDataURL(), class: marked ? 'ras hit' : 'ras'}); }
function draw() {
  stale = false;
  svg.replaceChildren(); svg.dataset.domain = dom.map(v => v.toFixed(3)).join(',');
  const defs = el('defs'), clip = el('clipPath', {id: 'ex-clip'});
  clip.append(el('rect', {x: L, y: T, width: W - L - R, height: H - B - T})); defs.append(clip); svg.append(defs);
  svg.append(el('line', {x1: L, y1: H - B, x2: W - R, y2: H - B, class: 'ax'}), el('line', {x1: L, y1: T, x2: L, y2: H - B, class: 'ax'}));
  const [xt, xd] = ticks(dom[0], dom[1]), [yt, yd] = ticks(dom[2], dom[3]);
  for (const v of xt) svg.append(el('text', {x: sx(v), y: H - B + 15, class: 'tk', 'text-anchor': 'middle'}, v.toFixed(xd)));
  for (const v of yt) svg.append(el('text', {x: L - 5, y: sy(v) + 3, class: 'tk', 'text-anchor': 'end'}, v.toFixed(yd)));
  svg.append(el('text', {x: (L + W) / 2, y: H - 8, class: 'lb', 'text-anchor': 'middle'}, 'US accuracy (%)'),
             el('text', {x: 14, y: (H - B) / 2, class: 'lb', 'text-anchor': 'middle', transform: `rotate(-90 14 ${(H - B) / 2})`}, 'DS accuracy (%)'));
  const plot = el('g', {'clip-path': 'url(#ex-clip)'});
  if (g.b.length > 1) {   // the interval under the models, as the figures shade it
    const pt = (q, i) => `${sx(q[0]).toFixed(1)},${sy(q[i]).toFixed(1)}`;
    const band = el('polygon', {class: 'band', points: g.b.map(q => pt(q, 2)).concat(g.b.slice().reverse().map(q => pt(q, 1))).join(' ')});
    band.append(el('title', {}, `${g.v} interval of the headline prediction`)); plot.append(band); }
  document.getElementById('ex-leg-band').hidden = g.b.length < 2;
  document.getElementById('ex-leg-lv').textContent = g.v;
  // the marks the group has: "held out" beside a group with nothing held out said it had some
  document.getElementById('ex-leg-model').hidden = g.nh === g.p.length;
  document.getElementById('ex-leg-held').hidden = g.nh === 0;
  if (g.t !== null) plot.append(el('line', {x1: sx(g.t), y1: T, x2: sx(g.t), y2: H - B, class: 'thr'}));
  let pl = null;   // the prediction goes over the models (drawn after them), the marked models over it
  if (g.l.length > 1) { pl = el('polyline', {class: 'law', points: g.l.map(q => `${sx(q[0]).toFixed(1)},${sy(q[1]).toFixed(1)}`).join(' ')});
    pl.append(el('title', {}, `headline prediction${g.u ? ' (not trusted)' : ''}, from the best visible model to the tested horizon`)); }
  document.getElementById('ex-leg-law').hidden = g.l.length < 2;
  document.getElementById('ex-leg-trust').textContent = g.u ? ' (not trusted)' : '';
  document.getElementById('ex-leg-thr').hidden = g.t === null;
  const q = query(), np = g.p.length, vx = new Float32Array(np), vy = new Float32Array(np), vi = new Int32Array(np), vh = new Uint8Array(np);
  let hits = 0, m = 0;   // hits: counted over the group, drawn or not; m: the models in view
  for (let i = 0; i < np; i++) {
    const p = g.p[i], hit = q !== '' && (low[p[2]] ?? '').includes(q);
    if (hit) hits++;
    // only the models in view (the clip hides the rest): zoomed into a group of 50,000 models every
    // wheel notch built all 50,000 circles again, ~1.4 s each
    const cx = sx(p[0]), cy = sy(p[1]);
    if (!(cx >= L - 5 && cx <= W - R + 5 && cy >= T - 5 && cy <= H - B + 5)) continue;
    vx[m] = cx; vy[m] = cy; vi[m] = i; vh[m] = hit ? 1 : 0; m++; }
  const circle = k => { const p = g.p[vi[k]], held = p[3] === 1, hit = vh[k] === 1;
    const c = el('circle', {cx: vx[k].toFixed(1), cy: vy[k].toFixed(1), r: hit ? 4.5 : 3, class: (held ? 'h' : 'v') + (hit ? ' hit' : '')});
    c.append(el('title', {}, tip(p))); return c; };
  const marked = [], rest = [], restHit = [];
  let front = 0;
  for (let k = 0; k < m; k++) {
    if (m > SVG_MOST && !(g.f[vi[k]] && front++ < FRONT_MOST)) { (vh[k] ? restHit : rest).push(k); continue; }
    const c = circle(k);
    if (vh[k]) marked.push(c); else plot.append(c); }
  shown = m > SVG_MOST ? {x: vx, y: vy, i: vi, h: vh, m: m} : null;
  const under = raster(rest, vx, vy, vi, false), over = raster(restHit, vx, vy, vi, true);
  if (under) plot.insertBefore(under, plot.querySelector('circle'));   // under the frontier's circles
  if (pl) plot.append(pl);
  if (over) plot.append(over);
  // marked models on top, one by one: append(...marked) of a search that marked ~125,000 models
  // overflowed the stack and left the view empty
  for (const c of marked) plot.append(c);
  // "matches the search" only where something is marked: with no search it named a mark the plot has not
  document.getElementById('ex-leg-hit').hidden = hits === 0;
  if (cur >= 0 && inView(cur)) { const p = g.p[cur];   // the keyboard's model, ringed
    plot.append(el('circle', {cx: sx(p[0]).toFixed(1), cy: sy(p[1]).toFixed(1), r: 7, class: 'cur'})); }
  svg.append(plot);
  const n = `${np} model${np === 1 ? '' : 's'}`;   // "1 models" read as a typo
  info.textContent = q === '' ? n : `${hits} of ${n} match`;
  svg.setAttribute('aria-label', `${g.k}: ${n}`); }   // "the chosen group" named none
const inView = i => { const p = g.p[i], cx = sx(p[0]), cy = sy(p[1]); return cx >= L && cx <= W - R && cy >= T && cy <= H - B; };
const unit = e => new DOMPoint(e.clientX, e.clientY).matrixTransform(svg.getScreenCTM().inverse());
const at = e => { const p = unit(e);
  return [dom[0] + (p.x - L) / (W - L - R) * (dom[1] - dom[0]), dom[2] + (H - B - p.y) / (H - B - T) * (dom[3] - dom[2])]; };
svg.addEventListener('wheel', e => { e.preventDefault(); const [x, y] = at(e); zoomAt(x, y, Math.exp(0.0015 * e.deltaY), redraw); }, {passive: false});
svg.addEventListener('pointerdown', e => { drag = at(e); svg.setPointerCapture(e.pointerId); });
svg.addEventListener('pointermove', e => {
  if (!drag) {   // over the pixels: the nearest model drawn within 5 units is the hovered one
    if (!shown || e.target.tagName === 'circle') return;
    const p = unit(e); let best = -1, d = Infinity;   // a marked model (drawn over the rest) first
    for (let k = 0; k < shown.m; k++) { const dx = shown.x[k] - p.x, dy = shown.y[k] - p.y, e2 = dx * dx + dy * dy - (shown.h[k] ? 100 : 0);
      if (e2 < d && e2 <= 25 - (shown.h[k] ? 100 : 0)) { d = e2; best = k; } }
    if (best >= 0) hover.textContent = tip(g.p[shown.i[best]]);
    return; }
  const [x, y] = at(e);
  dom = [dom[0] - (x - drag[0]), dom[1] - (x - drag[0]), dom[2] - (y - drag[1]), dom[3] - (y - drag[1])]; redraw(); });
// pointercancel too (a touch taken over by the browser, a lost capture): without it the drag stayed on
// and the view panned with every later move of the mouse, no button pressed
for (const t of ['pointerup', 'pointercancel', 'lostpointercapture']) svg.addEventListener(t, () => { drag = null; });
svg.addEventListener('dblclick', reset);
// the hovered model goes to its own line: the count of matches stays readable
svg.addEventListener('mouseover', e => { const t = e.target.querySelector && e.target.querySelector('title');
  if (e.target.tagName === 'circle' && t) hover.textContent = t.textContent; });
// The keyboard (the plot takes focus with Tab): the arrow keys step from model to model in view, the
// search's matches only while there is a search: left/right in US accuracy, up/down in DS accuracy,
// Home/End to the first/last, Page Up/Down along the frontier; + and - zoom at the model, 0 resets,
// Escape lets go. The model is ringed and named on the hover line, which a screen reader reads out.
const step = (order, pos, dir, ok) => { for (let k = pos + dir; k >= 0 && k < order.length; k += dir) if (ok(order[k])) return order[k]; return -1; };
svg.addEventListener('keydown', e => {
  if (e.altKey || e.ctrlKey || e.metaKey) return;
  const q = query(), ok = i => inView(i) && (q === '' || (low[g.p[i][2]] ?? '').includes(q)), n = g.p.length;
  const from = (pos, d) => cur < 0 ? (d > 0 ? -1 : n) : pos[cur];
  const move = {ArrowRight: [g.ox, g.px, 1, ok], ArrowLeft: [g.ox, g.px, -1, ok], ArrowUp: [g.oy, g.py, 1, ok],
                ArrowDown: [g.oy, g.py, -1, ok], PageUp: [g.ox, g.px, 1, i => g.f[i] && ok(i)],
                PageDown: [g.ox, g.px, -1, i => g.f[i] && ok(i)]}[e.key];
  let to = -2;
  if (move) to = step(move[0], from(move[1], move[2]), move[2], move[3]);
  else if (e.key === 'Home') to = step(g.ox, -1, 1, ok);
  else if (e.key === 'End') to = step(g.ox, n, -1, ok);
  else if (e.key === '+' || e.key === '=' || e.key === '-') {
    const c = cur >= 0 && inView(cur) ? g.p[cur] : [(dom[0] + dom[1]) / 2, (dom[2] + dom[3]) / 2];
    zoomAt(c[0], c[1], e.key === '-' ? 1 / 0.7 : 0.7); }
  else if (e.key === '0') reset();
  else if (e.key === 'Escape') { cur = -1; hover.textContent = ''; draw(); }
  else return;
  e.preventDefault();
  if (to >= 0) { cur = to; hover.textContent = tip(g.p[cur]); draw(); }
  else if (to === -1) hover.textContent = q === '' ? 'no further model in view that way' : 'no further match in view that way'; });
// the group the list shows, its search box as it stands: going back to the page, the browser puts
// back the list's choice and the box's text after this script ran (no change event), and the view
// drew the first group under another group's name, without its marks
const show = () => { g = D.groups[+sel.value] || D.groups[0]; prepare(); cur = -1; hover.textContent = ''; reset(); };
sel.addEventListener('change', show);
find.addEventListener('input', draw);
// (after the load event: a group chosen or a zoom made while the figures loaded is kept; a page from
// the back-forward cache is as it was left)
window.addEventListener('pageshow', e => { if (!e.persisted) { if ((D.groups[+sel.value] || D.groups[0]) !== g) show(); else draw(); } });
show();
})();
"""


def group_key(values: Any) -> tuple[Any, ...]:
    """A group's (us_task, ds_task, eval_protocol, shots) with NaN/NA as None, so that a row of
    ``fits.parquet`` and a group of ``points.parquet`` meet in one dict."""
    return tuple(None if pd.isna(x) else x for x in values)


def points_by_group(points: pd.DataFrame) -> dict[tuple[Any, ...], pd.DataFrame]:
    """``points.parquet``'s rows per group, keyed by :func:`group_key`."""
    return {group_key(k): g for k, g in points.groupby(KEYS, dropna=False, sort=False)}


def _label(r: dict[str, Any]) -> str:
    shots = "" if pd.isna(r["shots"]) else f", {int(r['shots'])}-shot"
    return f"{r['us_task']} → {r['ds_task']} ({r['eval_protocol']}{shots})"


def _missing(v: Any) -> bool:
    return v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)) or str(v) == ""


def _trusted(v: Any) -> bool:
    """A row's ``trusted`` as a bool (missing or NA: not trusted)."""
    return not _missing(v) and bool(v)


def point_name(run_id: Any, model_name: Any, width: int = 8) -> str:
    """How the report names one model: its ``model_name`` from the store, followed by the first
    ``width`` characters of its run id (an MLflow run id is 32 hex digits; several runs, e.g.
    seeds, share a model name); the run id alone where it holds the name as a part of its own
    (:func:`_holds_name`) or the store has no model name; "?" where it has neither.
    :func:`point_names` picks ``width`` so that different runs get different names."""
    run = "" if _missing(run_id) else str(run_id)
    model = "" if _missing(model_name) else str(model_name)
    if not model:
        return run or "?"
    if not run or _holds_name(run, model):
        return run or model
    return f"{model} · {run[:width]}"


def _holds_name(run: str, model: str) -> bool:
    """Whether run id ``run`` holds ``model`` as a part of its own, between separators or its
    ends (``vit-b16-seed1`` holds ``vit-b16``): a short name found by chance among an MLflow id's
    hex digits (``b2`` in ``3fb2c9...``) left the point named by the bare 32-digit id. A separator
    is any character but a letter or digit (``str.isalnum``). Found with ``str.find``: a regex
    built per call was compiled again for every point once a store had more model names than
    ``re``'s cache holds (512), ~0.1 ms a point: 5 s for 48,000 points of 2,000 models."""
    i = run.find(model)
    while i >= 0:
        j = i + len(model)
        if (i == 0 or not run[i - 1].isalnum()) and (j == len(run) or not run[j].isalnum()):
            return True
        i = run.find(model, i + 1)
    return False


def prefix_widths(run_ids: Any, least: int = 8) -> dict[str, int]:
    """Per distinct run id, the length of its shortest prefix (at least ``least``) that no other
    id in ``run_ids`` starts with, or its whole length. MLflow's 32 hex digits keep 8; ids from a
    template (``sweep-a-trial-1``, ``sweep-a-trial-2``) grow to where they differ: cut at 8 they
    were one name in hover, search and the name table. Cost: one sort of the distinct ids."""
    ids = sorted({str(r) for r in run_ids if not _missing(r)})
    out: dict[str, int] = {}
    for i, r in enumerate(ids):   # in sorted order the longest shared prefix is with a neighbour
        shared = max((len(os.path.commonprefix([r, ids[j]])) for j in (i - 1, i + 1) if 0 <= j < len(ids)),
                     default=0)
        out[r] = max(least, shared + 1)
    return out


def point_names(points: pd.DataFrame) -> list[str]:
    """:func:`point_name` of every row of ``points.parquet`` (one written before it had
    ``model_name`` names its runs), distinct for distinct run ids among these rows
    (:func:`prefix_widths`)."""
    models = points["model_name"] if "model_name" in points else [None] * len(points)
    runs = points["run_id"].astype(object)
    widths = prefix_widths(runs)
    # once per distinct (run, model): a run is a point of every group it was evaluated in
    named: dict[tuple[str, str], str] = {}
    out = []
    for r, m in zip(runs, models):
        key = ("" if _missing(r) else str(r), "" if _missing(m) else str(m))
        name = named.get(key)
        if name is None:
            name = named[key] = point_name(r, m, widths.get(str(r), 8))
        out.append(name)
    return out


def nice_ticks(lo: float, hi: float, most: int = 7) -> list[float]:
    """Round tick values (steps of 1, 2 or 5 times a power of ten, at most ``most`` intervals) from a
    tick at or below ``lo`` to one at or above ``hi``: an axis of accuracy points that reads 40, 50,
    60 rather than 40, 52.5, 65."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"ticks need finite ends, got {lo!r}, {hi!r}")
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    base = 10.0 ** math.floor(math.log10((hi - lo) / most))
    step = next(m * base for m in (1, 2, 5, 10, 20) if (math.ceil(hi / (m * base)) - math.floor(lo / (m * base))) <= most)
    a, b = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
    return [round(i * step, 10) for i in range(a, b + 1)]


def prediction_line(r: dict[str, Any], points: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """The headline's prediction (US, DS accuracy in points) from the best visible model to the
    tested horizon, as the figures draw it: empty where the row has no back-tested horizon."""
    from .analysis import predict_fit
    from .analysis.headline import row_number

    # None (pyarrow's null) or NA as NaN: float(None) raised a TypeError and no report was written
    best, hus = row_number(r.get("best_us")), row_number(r.get("horizon_us"))
    if not (math.isfinite(best) and math.isfinite(hus) and hus > best):
        return np.zeros(0), np.zeros(0)
    xs = np.linspace(best, hus, points)
    ys = predict_fit(r, xs)
    ok = np.isfinite(ys)
    return xs[ok] * 100, ys[ok] * 100


def prediction_band(r: dict[str, Any], points: int = 60) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The headline's interval at its row's level (US, low, high DS accuracy in points) along
    :func:`prediction_line`, as the figures shade it; empty where the row has no back-tested horizon
    or no interval (no back-test)."""
    from .analysis import predict_interval
    from .analysis.headline import row_number

    best, hus = row_number(r.get("best_us")), row_number(r.get("horizon_us"))
    if not (math.isfinite(best) and math.isfinite(hus) and hus > best):
        return np.zeros(0), np.zeros(0), np.zeros(0)
    xs = np.linspace(best, hus, points)
    lo, hi = predict_interval(r, xs)
    ok = np.isfinite(lo) & np.isfinite(hi)
    return xs[ok] * 100, lo[ok] * 100, hi[ok] * 100


def explorer_data(heads: pd.DataFrame, points: pd.DataFrame) -> tuple[dict[str, Any], list[tuple[str, int]]]:
    """The JSON the viewer reads: ``names`` (each model's :func:`point_name` once), ``ids`` (per
    name, its whole run id, "" where the name holds it: the search finds a pasted id) and one entry
    per group with its label, hold-out threshold (points; null where no model is above it), the
    headline's prediction as a polyline (:func:`prediction_line`), whether the headline is
    untrusted (``u``, 1/0) and points as [US, DS, name index, held out (1/0)]; and
    the groups left out for :data:`MAX_POINTS`, as (label, number of points). Names are made over
    all of ``points``, so different runs get different names on the page, whichever groups it holds."""
    from .analysis.answers import level_pct, row_level
    from .analysis.headline import row_number

    points = points.reset_index(drop=True)
    name_of = point_names(points)   # by row position
    runs = ["" if _missing(r) else str(r) for r in points["run_id"]]
    by = points_by_group(points)
    names: dict[str, int] = {}
    ids: list[str] = []   # per name, the whole run id where the name does not hold it (search finds it)
    groups: list[dict[str, Any]] = []
    left: list[tuple[str, int]] = []
    total = 0
    for r in heads.to_dict("records"):
        g = by.get(group_key(r[c] for c in KEYS))
        if g is not None:
            # a model without both accuracies has no place on the plot: a NaN in the JSON (which
            # has none) made JSON.parse throw, and the view was empty for every group
            g = g[np.isfinite(g["us_accuracy"].to_numpy(float)) & np.isfinite(g["ds_accuracy"].to_numpy(float))]
        if g is None or g.empty:
            continue
        if total + len(g) > MAX_POINTS:
            left.append((_label(r), len(g)))
            continue
        total += len(g)
        us, ds = g["us_accuracy"].to_numpy(float) * 100, g["ds_accuracy"].to_numpy(float) * 100
        idx = []
        for i in g.index:
            if name_of[i] not in names:
                names[name_of[i]] = len(names)
                ids.append("" if runs[i] in name_of[i] else runs[i])
            idx.append(names[name_of[i]])
        xs, ys = prediction_line(r)
        bx, blo, bhi = prediction_band(r)
        thr = row_number(r.get("holdout_threshold"))
        held = g["us_accuracy"].to_numpy(float) > thr
        # the threshold line only where it holds models out, as the figures draw it: without a
        # hold-out (--holdout-quantile 1.0: the threshold is the best model's US) it marked a
        # "hold-out threshold" through the best model with nothing beyond it
        groups.append({"k": _label(r), "t": round(100 * thr, 3) if math.isfinite(thr) and held.any() else None,
                       "l": [[round(float(a), 3), round(float(b), 3)] for a, b in zip(xs, ys)],
                       # the line alone read as the answer, most of all where it is not trusted: the
                       # figures shade its interval, and so does this view
                       "b": [[round(float(a), 3), round(float(b), 3), round(float(c), 3)] for a, b, c in zip(bx, blo, bhi)],
                       "v": level_pct(row_level(r)),
                       # 1: the headline is not trusted, and its line says so, as the figures and the
                       # hover views label it (its answer states the interval, not this line)
                       "u": 0 if _trusted(r.get("trusted")) else 1,
                       # held out as the fit decided, on the unrounded accuracy: compared in the page, a
                       # point rounded to 2 decimals against the threshold to 3 (83.46 > 83.459) showed
                       # the fitted best model as held out
                       "p": [[round(float(a), 2), round(float(b), 2), i, int(h)] for a, b, i, h in zip(us, ds, idx, held)]})
    return {"names": list(names), "ids": ids, "groups": groups}, left


#: Groups named where the page says which groups it left out (the rest are counted).
LEFT_NAMED = 5


def _left_out_text(left: list[tuple[str, int]], *, embedded: bool) -> str:
    """The note (HTML) on the groups :func:`explorer_data` left out, each named with its number
    of points (the first :data:`LEFT_NAMED`): "40 more groups are not embedded" said neither which
    nor why a group the user looked for was missing. "" when none was left out."""
    if not left:
        return ""
    n = len(left)
    what = f"{n}{' more' if embedded else ''} group{'s are' if n != 1 else ' is'} not embedded"
    named = "; ".join(f"{html.escape(k)} ({c:,} points)" for k, c in left[:LEFT_NAMED])
    rest = f"; and {n - LEFT_NAMED} more" if n > LEFT_NAMED else ""
    return (f"<span class=ex-left>{what} (this page holds at most {MAX_POINTS:,} points; points.parquet has "
            f"them all): {named}{rest}.</span>")   # a 400-character task name wraps, never widens the page


#: How to use the view without a mouse (the plot names it as its description).
KEYS_TEXT = ("Keyboard: Tab to the plot, then the arrow keys step through the models in view (the matches while "
             "searching; left/right by US accuracy, up/down by DS accuracy, Page Up/Down along the frontier), "
             "+ and - zoom, 0 resets.")

#: What the explorer's marks mean (the model, held-out, law and threshold entries hide for a group without them).
LEGEND = ("<div class=ex-legend>"
          "<span id=ex-leg-model><svg width=12 height=12><circle cx=6 cy=6 r=3.5 fill='#3a6ea5' fill-opacity=.5 /></svg>model</span>"
          "<span id=ex-leg-held><svg width=12 height=12><circle cx=6 cy=6 r=3.5 fill=none stroke='#3a6ea5' /></svg>"
          "held out (not fitted)</span>"
          "<span id=ex-leg-hit hidden><svg width=12 height=12><circle cx=6 cy=6 r=4.5 fill='#e67e22' stroke='#000' stroke-width=.6 />"
          "</svg>matches the search</span>"
          "<span id=ex-leg-law><svg width=22 height=12><line x1=1 y1=6 x2=21 y2=6 stroke='#c0392b' stroke-width=1.6 />"
          "</svg>headline prediction<span id=ex-leg-trust></span>, best visible model to the tested horizon</span>"
          "<span id=ex-leg-band><svg width=22 height=12><rect x=1 y=2 width=20 height=8 fill='#c0392b' "
          "fill-opacity=.15 /></svg><span id=ex-leg-lv></span> interval</span>"
          "<span id=ex-leg-thr><svg width=22 height=12><line x1=11 y1=0 x2=11 y2=12 stroke='#444' "
          "stroke-dasharray='4 3' /></svg>hold-out threshold</span></div>")


def explorer_html(heads: pd.DataFrame, points: pd.DataFrame | None) -> str:
    """The "Explore a group" section (empty when there are no points)."""
    if points is None or points.empty or heads.empty:
        return ""
    data, left = explorer_data(heads, points)
    more = _left_out_text(left, embedded=bool(data["groups"]))
    if not data["groups"]:
        # every group over MAX_POINTS alone (one of 300,000 models): the section vanished unsaid
        return f"<h2>Explore a group</h2><p class=note>{more}</p>" if more else ""
    # JSON inside <script>: '<' escaped so that no value can close the element
    blob = json.dumps(data, separators=(",", ":"), ensure_ascii=False).replace("<", "\\u003c")
    options = "".join(f"<option value={i}>{html.escape(g['k'])}</option>" for i, g in enumerate(data["groups"]))
    return ("<h2>Explore a group</h2><p class=note>Every group's models: pick a group, scroll to zoom at the cursor, "
            "drag to pan, double-click to reset; type part of a model's name or run id to mark it, hover a point for its "
            f"model and accuracies. <span id=ex-keys>{KEYS_TEXT}</span>{' ' + more if more else ''}</p>"
            f"<div class=explore><select id=ex-group aria-label='group'>{options}</select>"
            "<input id=ex-find type=search placeholder='find a model' aria-label='find a model'>"
            "<span id=ex-info class=info role=status aria-live=polite></span><span id=ex-hover class=hover aria-live=polite></span>" + LEGEND +
            "<svg id=ex-svg class=explore viewBox='0 0 760 460' width=760 height=460 tabindex=0 role=application "
            "aria-label='the chosen group' aria-describedby=ex-keys></svg></div>"
            f"<script type=application/json id=ex-data>{blob}</script><script>{JS}</script>")
