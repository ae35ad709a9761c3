// The page of `matryoshka serve`: search at any size or through a funnel, and a map of the
// embedding space at the chosen size. Plain JavaScript; it talks to its own server only
// (GET /api/info, POST /search, GET /api/map/points, GET /api/map?size=M). The stable element
// ids and data- attributes it sets are listed in docs/serve.md.
(function () {
  'use strict';
  var K = 10;                 // results shown, and the overlap's k
  var SHORTLIST = 200;        // candidates the funnel's first stage keeps
  var DEBOUNCE_MS = 150;      // a slider move waits this long for the next before asking
  var MOVE_MS = 400;          // the map's points move to a new size in this time
  var SIDE = 560, PAD = 16;   // the map's frame in SVG units
  var PALETTE = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2',
                 '#7f7f7f', '#bcbd22', '#17becf', '#393b79', '#637939', '#8c6d31', '#843c39',
                 '#7b4173', '#3182bd', '#e6550d', '#31a354', '#756bb1', '#636363'];
  var SVG_NS = 'http://www.w3.org/2000/svg';

  var $ = function (id) { return document.getElementById(id); };
  var params = new URLSearchParams(window.location.search);
  var st = {
    info: null, d: 0, trained: [], size: 0, key: '', canSearch: false,
    searchSeq: 0, mapSeq: 0, points: null, circles: [], byRow: {}, maps: {}, anim: null,
    hits: [], timers: {}
  };
  try { st.key = window.sessionStorage.getItem('matryoshka-key') || ''; } catch (e) { /* none */ }

  // ------------------------------------------------------------------ requests
  function api(path, body) {
    var opts = { headers: {} };
    if (st.key) opts.headers.Authorization = 'Bearer ' + st.key;
    if (body) {
      opts.method = 'POST';
      opts.headers['Content-Type'] = 'application/json';
      opts.body = JSON.stringify(body);
    }
    return fetch(path, opts).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (data) {
        if (r.ok) return data;
        var err = new Error((data.error && data.error.message) || r.status + ' ' + r.statusText);
        err.status = r.status;
        throw err;
      });
    });
  }

  function later(name, fn) {
    clearTimeout(st.timers[name]);
    st.timers[name] = setTimeout(fn, DEBOUNCE_MS);
  }

  function notice(text, kind) {
    var el = $('notice');
    el.textContent = text || '';
    el.hidden = !text;
    el.className = kind || '';
  }

  function failed(err) {
    if (err.status === 401) {
      $('auth').hidden = false;
      notice('This server needs an API key.', 'error');
    } else {
      notice(err.message, 'error');
    }
  }

  // ------------------------------------------------------------------ numbers
  function fmtBytes(n) {
    var units = ['B', 'kB', 'MB', 'GB', 'TB'], i = 0;
    while (n >= 1000 && i < units.length - 1) { n /= 1000; i += 1; }
    return (i === 0 ? String(n) : n.toFixed(n < 10 ? 2 : n < 100 ? 1 : 0)) + ' ' + units[i];
  }
  function fmtMs(x) { return x === null || x === undefined ? '–' : x < 10 ? x.toFixed(2) : x.toFixed(1); }
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = text;
    return e;
  }

  // ------------------------------------------------------------------ size and funnel
  function stages(m) {
    var lim = st.info.limits || {};
    var k = Math.min(K, lim.max_k || K);
    var short = Math.max(k, Math.min(SHORTLIST, lim.max_shortlist || SHORTLIST));
    return [[m, short], [st.d, k]];
  }

  function describeSize() {
    var m = st.size, f = $('funnel').checked, note = $('size-note');
    $('size-value').textContent = String(m);
    $('size').setAttribute('aria-valuetext', m + ' dimensions');
    var trained = st.trained.indexOf(m) >= 0;
    note.textContent = !st.trained.length ? '' : trained ? 'trained size' : 'a prefix (not a trained size)';
    note.className = trained ? 'trained' : '';
    var marks = document.querySelectorAll('#size-marks button');
    Array.prototype.forEach.call(marks, function (b) {
      b.classList.toggle('current', Number(b.getAttribute('data-size')) === m);
    });
    if (f) {
      var s = stages(m);
      $('funnel-desc').textContent = JSON.stringify(s) + ': shortlist ' + s[0][1] + ' at ' +
        s[0][0] + ' dims, rerank them at ' + s[1][0];
    } else {
      $('funnel-desc').textContent = 'exact search at ' + m + ' dims';
    }
    $('funnel-desc').setAttribute('data-funnel', f ? JSON.stringify(stages(m)) : '');
    var url = new URLSearchParams();
    if ($('query').value.trim()) url.set('q', $('query').value.trim());
    url.set('size', String(m));
    if (f) url.set('funnel', '1');
    window.history.replaceState(null, '', '?' + url.toString());
  }

  function setSize(m, now) {
    st.size = m;
    $('size').value = String(m);
    describeSize();
    if (now) { search(); showMap(m); return; }
    later('size', function () { search(); showMap(st.size); });
  }

  function buildSizes(info) {
    var slider = $('size'), ticks = $('size-ticks'), marks = $('size-marks');
    slider.min = String(Math.min(8, info.d));
    slider.max = String(info.d);
    info.sizes.forEach(function (m) {
      var o = document.createElement('option');
      o.value = String(m);
      o.label = String(m);
      ticks.appendChild(o);
      var b = el('button', 'size-mark' + (st.trained.indexOf(m) >= 0 ? ' trained' : ''), String(m));
      b.type = 'button';
      b.setAttribute('data-size', String(m));
      b.title = st.trained.indexOf(m) >= 0 ? 'trained size ' + m : 'size ' + m;
      b.addEventListener('click', function () { setSize(m, true); });
      marks.appendChild(b);
    });
  }

  // ------------------------------------------------------------------ search
  function search() {
    var q = $('query').value.trim(), m = st.size, funnel = $('funnel').checked;
    if (!q || !st.canSearch) return;
    var seq = ++st.searchSeq, t0 = performance.now();
    var body = { query: q, k: Math.min(K, (st.info.limits || {}).max_k || K), overlap: true };
    if (funnel) { body.funnel = stages(m); delete body.k; } else { body.dim = m; }
    $('results').setAttribute('data-state', 'loading');
    api('/search', body).then(function (ans) {
      if (seq !== st.searchSeq) return;  // a newer question was asked: this answer is stale
      notice('');
      showAnswer(ans, q, m, funnel, performance.now() - t0);
    }, function (err) {
      if (seq !== st.searchSeq) return;
      $('results').setAttribute('data-state', 'error');
      failed(err);
    });
  }

  function showStats(ans, roundTrip) {
    var t = ans.timings_ms, lat = $('latency');
    lat.textContent = fmtMs(t.search) + ' ms';
    lat.setAttribute('data-ms', String(t.search));
    var more = 'search; encode ' + fmtMs(t.encode) + ' ms, round trip ' + fmtMs(roundTrip) + ' ms';
    if (t.stages) more += '; stages ' + t.stages.map(fmtMs).join(' + ') + ' ms';
    $('latency-more').textContent = more;
    var b = $('bytes');
    b.textContent = fmtBytes(ans.bytes_per_query);
    b.setAttribute('data-bytes', String(ans.bytes_per_query));
    var count = st.info.count || 0;
    $('bytes-more').textContent = ans.funnel
      ? count.toLocaleString() + ' rows at ' + ans.funnel[0][0] + ' dims, then ' +
        Math.min(ans.funnel[0][1], count) + ' at ' + ans.funnel[1][0]
      : count.toLocaleString() + ' rows at ' + ans.dim + ' dims';
    var o = $('overlap'), k = ans.k;
    o.textContent = Math.round(ans.overlap * 100) + '%';
    o.setAttribute('data-overlap', String(ans.overlap));
    $('overlap-more').textContent = Math.round(ans.overlap * k) + ' of the exact top ' + k +
      ' at ' + st.d + ' dims';
  }

  function resultItem(r, i) {
    var li = el('li', 'result');
    li.setAttribute('data-row', String(r.row));
    li.setAttribute('data-id', String(r.id));
    li.setAttribute('data-score', String(r.score));
    if (r.name !== null && r.name !== undefined) li.setAttribute('data-name', r.name);
    var p = r.payload || {};
    var head = el('div', 'head');
    head.appendChild(el('span', 'rank', String(i + 1)));
    head.appendChild(el('span', 'score', r.score === null ? '–' : r.score.toFixed(3)));
    head.appendChild(el('span', 'name', r.name !== null && r.name !== undefined ? r.name : 'row ' + r.row));
    if (p.title) head.appendChild(el('span', 'title', String(p.title)));
    li.appendChild(head);
    var text = p.text || p.sentence || p.body;
    if (text) {
      text = String(text);
      li.appendChild(el('p', 'text', text.length > 260 ? text.slice(0, 259) + '…' : text));
    }
    li.addEventListener('mouseenter', function () { highlight([r.row], 'focus'); });
    li.addEventListener('mouseleave', function () { highlight([], 'focus'); });
    return li;
  }

  function showAnswer(ans, q, m, funnel, roundTrip) {
    showStats(ans, roundTrip);
    var list = $('results');
    list.textContent = '';
    ans.results.forEach(function (r, i) { list.appendChild(resultItem(r, i)); });
    if (!ans.results.length) list.appendChild(el('li', 'empty', 'no results'));
    list.setAttribute('data-size', String(m));
    list.setAttribute('data-funnel', funnel ? '1' : '0');
    list.setAttribute('data-query', q);
    list.setAttribute('data-state', 'done');
    st.hits = ans.results.map(function (r) { return r.row; });
    highlight(st.hits, 'hit');
  }

  // ------------------------------------------------------------------ map
  function px(x, y) {  // map units to the SVG frame; the rare point past the frame sits on its edge
    var e = st.points.extent || 1, s = (SIDE - 2 * PAD) / (2 * e);
    var clamp = function (v) { return Math.max(PAD / 2, Math.min(SIDE - PAD / 2, v)); };
    return [clamp((x + e) * s + PAD), clamp(SIDE - ((y + e) * s + PAD))];
  }

  function buildMap(points) {
    var svg = $('map-svg');
    svg.textContent = '';
    st.points = points;
    st.circles = [];
    st.byRow = {};
    points.rows.forEach(function (row, i) {
      var c = document.createElementNS(SVG_NS, 'circle');
      c.setAttribute('class', 'map-pt');
      c.setAttribute('r', '3.2');
      c.setAttribute('cx', String(SIDE / 2));
      c.setAttribute('cy', String(SIDE / 2));
      c.setAttribute('fill', PALETTE[points.labels[i] % PALETTE.length]);
      c.setAttribute('data-row', String(row));
      c.setAttribute('data-label', points.classes[points.labels[i]] || '');
      var name = points.names[i];
      c.setAttribute('data-tip', points.titles[i] + (name && name !== points.titles[i] ? '  [' + name + ']' : '') +
        ' · ' + (points.classes[points.labels[i]] || ''));
      svg.appendChild(c);
      st.circles.push(c);
      st.byRow[row] = c;
    });
    var legend = $('map-legend');
    legend.textContent = '';
    points.classes.forEach(function (name, j) {
      var li = el('li', null, name);
      var sw = el('span', 'swatch');
      sw.style.background = PALETTE[j % PALETTE.length];
      li.insertBefore(sw, li.firstChild);
      li.setAttribute('data-series', name);
      legend.appendChild(li);
    });
    $('map-status').textContent = (points.sample === points.count
      ? 'All ' + points.count.toLocaleString() + ' rows'
      : points.sample.toLocaleString() + ' of ' + points.count.toLocaleString() + ' rows (a seeded sample)') +
      ', projected by ' + points.method.toUpperCase() +
      ', each size aligned to the full size; colour: ' + points.label_source + '.';
  }

  function highlight(rows, cls) {
    Array.prototype.forEach.call(document.querySelectorAll('#map-svg .' + cls), function (c) {
      c.classList.remove(cls);
    });
    var svg = $('map-svg');
    rows.forEach(function (row) {
      var c = st.byRow[row];
      if (c) { c.classList.add(cls); svg.appendChild(c); }  // drawn last: on top
    });
  }

  function mapAt(m) {
    if (st.maps[m]) return Promise.resolve(st.maps[m]);
    return api('/api/map?size=' + m).then(function (mp) { st.maps[m] = mp; return mp; });
  }

  function moveTo(mp) {
    var svg = $('map-svg'), to = mp.xy.map(function (p) { return px(p[0], p[1]); });
    var from = st.circles.map(function (c) { return [Number(c.getAttribute('cx')), Number(c.getAttribute('cy'))]; });
    if (st.anim) cancelAnimationFrame(st.anim);
    svg.setAttribute('data-state', 'moving');
    svg.setAttribute('data-size', String(mp.size));
    svg.setAttribute('data-map-size', String(mp.map_size));
    $('map-size-label').textContent = mp.map_size === mp.size ? String(mp.size) : mp.size + ' (map of ' + mp.map_size + ')';
    var t0 = null;
    function step(ts) {
      if (t0 === null) t0 = ts;
      var a = Math.min(1, (ts - t0) / MOVE_MS);
      a = a * (2 - a);
      st.circles.forEach(function (c, j) {
        c.setAttribute('cx', (from[j][0] + (to[j][0] - from[j][0]) * a).toFixed(1));
        c.setAttribute('cy', (from[j][1] + (to[j][1] - from[j][1]) * a).toFixed(1));
      });
      if (a < 1) { st.anim = requestAnimationFrame(step); return; }
      st.anim = null;
      svg.setAttribute('data-state', 'idle');
    }
    st.anim = requestAnimationFrame(step);
  }

  function showMap(m) {
    if (!st.points) return Promise.resolve();
    var seq = ++st.mapSeq;
    return mapAt(m).then(function (mp) {
      if (seq !== st.mapSeq) return;  // the slider moved on: this map is stale
      if (mp.generation !== st.points.generation) { return loadMap(m); }
      moveTo(mp);
    }, function (err) { if (seq === st.mapSeq) $('map-status').textContent = err.message; });
  }

  function loadMap(m) {
    st.maps = {};
    return api('/api/map/points').then(function (points) {
      buildMap(points);
      return showMap(m);
    });
  }

  // ------------------------------------------------------------------ tooltip
  function tooltips() {
    var tip = $('tooltip'), svg = $('map-svg');
    svg.addEventListener('mouseover', function (e) {
      var t = e.target.closest ? e.target.closest('[data-tip]') : null;
      if (!t) return;
      tip.textContent = t.getAttribute('data-tip');
      tip.hidden = false;
    });
    svg.addEventListener('mousemove', function (e) {
      if (tip.hidden) return;
      tip.style.left = (e.pageX + 14) + 'px';
      tip.style.top = (e.pageY + 14) + 'px';
    });
    svg.addEventListener('mouseout', function () { tip.hidden = true; });
  }

  // ------------------------------------------------------------------ start
  function describeServer(info) {
    var parts = [];
    if (info.model_loaded) parts.push('model ' + info.model_name + ' (d = ' + info.d + ')');
    if (info.index_loaded) parts.push('index of ' + info.count.toLocaleString() + ' rows (' + info.precision + ', ' + info.metric + ')');
    $('served').textContent = parts.join(' · ');
  }

  function start(info) {
    st.info = info;
    st.d = info.d;
    st.trained = info.dims || [];
    st.canSearch = info.model_loaded && info.index_loaded;
    describeServer(info);
    buildSizes(info);
    var q = params.get('q'), size = Number(params.get('size')) || info.d;
    if (q) $('query').value = q;
    $('funnel').checked = params.get('funnel') === '1';
    st.size = Math.max(Number($('size').min), Math.min(info.d, Math.round(size)));
    $('size').value = String(st.size);
    describeSize();
    if (!info.index_loaded) {
      $('query').disabled = true;
      $('query').placeholder = 'no index to search';
      notice('This server holds no index: nothing to search or map (start it with --index).', 'warn');
      $('map-status').textContent = 'This server holds no index: no map.';
      return Promise.resolve();
    }
    if (!info.model_loaded) {
      $('query').disabled = true;
      $('query').placeholder = 'no text model: search by vector through POST /search';
      notice('This server holds no text model: the page shows the map; search by vector through POST /search.', 'warn');
    }
    search();
    return loadMap(st.size);
  }

  function wire() {
    $('size').addEventListener('input', function () { setSize(Number($('size').value), false); });
    $('funnel').addEventListener('change', function () { describeSize(); search(); });
    $('query').addEventListener('input', function () { later('query', function () { describeSize(); search(); }); });
    $('search-form').addEventListener('submit', function (e) { e.preventDefault(); describeSize(); search(); });
    $('auth').addEventListener('submit', function (e) {
      e.preventDefault();
      st.key = $('api-key').value.trim();
      try { window.sessionStorage.setItem('matryoshka-key', st.key); } catch (x) { /* none */ }
      window.location.reload();
    });
    tooltips();
  }

  wire();
  api('/api/info').then(start).catch(failed).then(function () {
    document.body.setAttribute('data-ready', '1');
  });
})();
