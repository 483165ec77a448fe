// Load UI-format workflows into a running ComfyUI's real browser frontend and report problems.
//
//   NODE_PATH=/path/to/node_modules node tools/comfy_frontend_check.mjs [--server URL] [--screenshot DIR]
//        [--video FILE_IN_OUTPUT ...] [--queue [--set Type.widget=VALUE ...]] [--templates PACK]
//        [--thumbnails DIR] [--min-sizes] example_workflows/ovi_text_to_av.json ...
//
// For each workflow: app.loadGraphData(json), then report node types the frontend does not know, widgets
// whose value is not one of their options (combo) or not a number (number widgets), each node's widget
// values by name, the API graph the frontend would queue (app.graphToPrompt) against the shipped API file
// (api_workflows/NAME_api.json, or NAME_api.json beside the file) when there is one, and every console error / page error. --video NAME (a file in
// ComfyUI's output folder, e.g. Ovi/ovi_t2v_00001_.mp4) drops that file onto the app (app.handleFile)
// and reports the graph it restored (the prompt/workflow metadata of the container). --queue also queues
// each loaded workflow from the page (after --set overrides of widget values, e.g.
// OviJointSampler.steps=2), waits until the queue is idle and prints what each node shows as text (the
// '$$node-text-preview' widget, rendered by the frontend with innerHTML) and any HTML element that text
// turned into (a sign of unescaped text).
// Every loaded graph is also checked for overlapping nodes at the sizes this frontend draws them (a node's
// box plus its title bar; the frontend grows a node to fit its widgets, so a saved size can be too small):
// each node's drawn size is printed, and each overlapping pair is a problem.
// --templates PACK: the frontend's list of custom-node templates (GET /workflow_templates, what the template
// browser shows) must name exactly the given UI files for PACK (the folder name under custom_nodes/), each
// served template (what a click in the browser opens) must be the given file, and each must have its
// thumbnail (PACK/NAME.jpg, a JPEG).
// --thumbnails DIR: after the checks, draw each workflow as the template browser's picture: the whole graph
// fitted into a square, rendered by this frontend with its menus hidden, saved as DIR/NAME.jpg (512x512).
// --min-sizes: load each workflow with every node saved at 10x10 instead, so the frontend grows each node
// to the smallest size it draws it at (with its media previews), and print those sizes per node type as
// JSON (tools/workflow_layout.py DRAWN_MIN records them). Overlaps are not checked then.
// Exit status 0 when nothing was found, 1 otherwise, 2 when the page did not come up.
//
// Needs playwright-core (npm, kept outside the repo) and a Chromium (Debian's /usr/bin/chromium).
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
let chromium;
try {
  ({ chromium } = require('playwright-core'));
} catch (e) {
  console.error('playwright-core not found: npm install playwright-core in a folder outside the repo and set NODE_PATH to its node_modules');
  process.exit(2);
}

const args = process.argv.slice(2);
let server = process.env.COMFY_URL || 'http://127.0.0.1:8188';
let shots = null;
const files = [];
const videos = [];
const sets = [];
let queue = false;
let templatesPack = null;
let thumbs = null;
let minSizes = null;
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--server') server = args[++i];
  else if (args[i] === '--screenshot') shots = args[++i];
  else if (args[i] === '--video') videos.push(args[++i]);
  else if (args[i] === '--queue') queue = true;
  else if (args[i] === '--set') sets.push(args[++i]);
  else if (args[i] === '--templates') templatesPack = args[++i];
  else if (args[i] === '--thumbnails') thumbs = args[++i];
  else if (args[i] === '--min-sizes') minSizes = {};
  else files.push(args[i]);
}
if (!files.length && !videos.length) {
  console.error('usage: comfy_frontend_check.mjs [--server URL] [--screenshot DIR] [--video NAME] workflow.json ...');
  process.exit(2);
}

// The shipped API file of a UI workflow: example_workflows/NAME.json -> api_workflows/NAME_api.json (or beside it).
const apiFor = (f) => {
  const stem = path.basename(f, '.json');
  for (const p of [path.join(path.dirname(f), '..', 'api_workflows', stem + '_api.json'),
    path.join(path.dirname(f), stem + '_api.json')]) {
    if (p !== f && fs.existsSync(p)) return JSON.parse(fs.readFileSync(p, 'utf8'));
  }
  return null;
};

const THUMB_PAGE = 2048; // page size the thumbnails are drawn at (then scaled to THUMB_SIZE)
const THUMB_SIZE = 512;
const THUMB_EDGE = 112; // the page's edges are left out (the frontend's floating zoom buttons sit there)

// Hide the frontend's menus, side bar, minimap and canvas info, so a screenshot shows only the graph.
const hideChrome = async (page) => page.evaluate(async () => {
  const ext = app.extensionManager;
  for (const [k, v] of [['Comfy.Minimap.Visible', false], ['Comfy.Graph.CanvasInfo', false]]) {
    try { await ext.setting.set(k, v); } catch (e) { /* an older frontend without this setting */ }
  }
  try { await ext.command.execute('Workspace.ToggleFocusMode'); } catch (e) { /* older frontend */ }
});

// Fit the whole graph into the page less its edges (centred, with a margin) and return a JPEG data URL of
// that square scaled to THUMB_SIZE px.
const drawThumbnail = async (page) => {
  await page.evaluate(({ margin, edge }) => {
    const title = LiteGraph.NODE_TITLE_HEIGHT || 30;
    const nodes = app.graph._nodes || app.graph.nodes;
    const x0 = Math.min(...nodes.map((n) => n.pos[0])) - margin;
    const y0 = Math.min(...nodes.map((n) => n.pos[1] - title)) - margin;
    const x1 = Math.max(...nodes.map((n) => n.pos[0] + n.size[0])) + margin;
    const y1 = Math.max(...nodes.map((n) => n.pos[1] + n.size[1])) + margin;
    const canvas = app.canvas;
    const rect = canvas.canvas.getBoundingClientRect();
    const [w, h] = [window.innerWidth - 2 * edge, window.innerHeight - 2 * edge];
    const scale = Math.min(w / (x1 - x0), h / (y1 - y0));
    canvas.deselectAllNodes?.();
    canvas.ds.scale = scale;
    // screen = (graph + offset) * scale - canvas origin: put the graph's box in the middle of the square
    canvas.ds.offset = [(edge - rect.left + (w - scale * (x1 - x0)) / 2) / scale - x0,
      (edge - rect.top + (h - scale * (y1 - y0)) / 2) / scale - y0];
    canvas.setDirty(true, true);
  }, { margin: 40, edge: THUMB_EDGE });
  await page.waitForTimeout(1500); // the DOM widgets (text boxes, players) follow the canvas
  const side = THUMB_PAGE - 2 * THUMB_EDGE;
  const clip = { x: THUMB_EDGE, y: THUMB_EDGE, width: side, height: side };
  const png = (await page.screenshot({ type: 'png', clip })).toString('base64');
  return page.evaluate(async ({ png, size }) => {
    const img = new Image();
    img.src = 'data:image/png;base64,' + png;
    await img.decode();
    const c = document.createElement('canvas');
    c.width = size; c.height = size;
    const ctx = c.getContext('2d');
    ctx.imageSmoothingQuality = 'high';
    ctx.drawImage(img, 0, 0, size, size);
    return c.toDataURL('image/jpeg', 0.85);
  }, { png, size: THUMB_SIZE });
};

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-component-update', '--no-first-run', '--disable-sync'],
});
let problems = 0;
const consoleErrors = [];
try {
  // thumbnails: a large square page, so the whole graph fits at a zoom where the frontend still draws widgets
  const page = await browser.newPage({ viewport: thumbs ? { width: THUMB_PAGE, height: THUMB_PAGE } : { width: 1600, height: 1000 } });
  page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(m.text()); });
  page.on('pageerror', (e) => consoleErrors.push('pageerror: ' + e.message));
  await page.goto(server, { waitUntil: 'domcontentloaded', timeout: 60000 });
  try {
    await page.waitForFunction(() => window.app && window.app.graph && window.LiteGraph
      && Object.keys(window.LiteGraph.registered_node_types || {}).length > 50, null, { timeout: 60000 });
  } catch (e) {
    console.error('the ComfyUI frontend did not come up: ' + e.message);
    process.exit(2);
  }
  for (let i = 0; i < 3; i++) { await page.keyboard.press('Escape'); await page.waitForTimeout(100); }
  if (thumbs) await hideChrome(page);
  // the frontend's own start-up graph may log errors of its own (e.g. its model links, blocked offline):
  // let them land before the first workflow is loaded, so only errors after a load count for that workflow
  await page.waitForTimeout(2000);
  if (consoleErrors.length) console.log(`(${consoleErrors.length} console error(s) before any workflow was loaded, not counted)`);
  const nTypes = await page.evaluate(() => Object.keys(LiteGraph.registered_node_types).length);
  const ovi = await page.evaluate(() => Object.keys(LiteGraph.registered_node_types).filter((t) => t.startsWith('Ovi')));
  console.log(`frontend up: ${nTypes} node types, Ovi: ${ovi.join(', ')}`);

  const inspect = async () => page.evaluate(async () => {
    const out = { missing: [], bad: [], nodes: [], overlaps: [] };
    const known = LiteGraph.registered_node_types;
    for (const n of app.graph._nodes || app.graph.nodes) {
      if (!known[n.type]) out.missing.push(n.type);
      const w = {};
      for (const wd of n.widgets || []) {
        w[wd.name] = wd.value;
        const opts = wd.options || {};
        let vals = opts.values;
        if (typeof vals === 'function') { try { vals = vals(); } catch (e) { vals = null; } }
        if (wd.type === 'combo' && Array.isArray(vals) && !vals.includes(wd.value)) {
          out.bad.push(`${n.type}#${n.id}.${wd.name} = ${JSON.stringify(wd.value)} not in [${vals.slice(0, 8).join(', ')}${vals.length > 8 ? ', ...' : ''}]`);
        }
        if (wd.type === 'number' && (typeof wd.value !== 'number' || Number.isNaN(wd.value))) {
          out.bad.push(`${n.type}#${n.id}.${wd.name} = ${JSON.stringify(wd.value)} is not a number`);
        }
      }
      out.nodes.push({ id: n.id, type: n.type, widgets: w, pos: [...n.pos], size: [...n.size] });
    }
    // the box the frontend draws: the body at pos with the node's size, and the title bar above it
    const title = LiteGraph.NODE_TITLE_HEIGHT || 30;
    const box = (n) => [n.pos[0], n.pos[1] - title, n.pos[0] + n.size[0], n.pos[1] + n.size[1]];
    for (let i = 0; i < out.nodes.length; i++) {
      for (let j = i + 1; j < out.nodes.length; j++) {
        const [a, b] = [box(out.nodes[i]), box(out.nodes[j])];
        const dx = Math.min(a[2], b[2]) - Math.max(a[0], b[0]);
        const dy = Math.min(a[3], b[3]) - Math.max(a[1], b[1]);
        if (dx > 0 && dy > 0) {
          out.overlaps.push(`${out.nodes[i].type}#${out.nodes[i].id} and ${out.nodes[j].type}#${out.nodes[j].id} overlap by ${Math.round(dx)}x${Math.round(dy)}`);
        }
      }
    }
    let prompt = null;
    try { prompt = (await app.graphToPrompt()).output; } catch (e) { out.bad.push('graphToPrompt failed: ' + e.message); }
    out.prompt = prompt;
    // the inputs each node type defines on the server (GET /object_info): the server drops any other input
    // (the frontend also sends the values of its own UI-only widgets, e.g. LoadVideo's 'video-preview', and in
    // 1.27.10 LoadAudio's 'audioUI'), so only these are compared
    window.__serverDefs = window.__serverDefs || await (await app.api.fetchApi('/object_info')).json();
    out.defined = {};
    for (const t of Object.keys(prompt || {}).map((k) => prompt[k].class_type)) {
      const d = window.__serverDefs[t]?.input || {};
      out.defined[t] = [...Object.keys(d.required || {}), ...Object.keys(d.optional || {})];
    }
    return out;
  });

  const report = (label, res, api) => {
    const uniq = [...new Set(res.missing)];
    console.log(`${label}: ${res.nodes.length} nodes`);
    if (uniq.length) { problems++; console.log(`  MISSING node types: ${uniq.join(', ')}`); }
    for (const b of res.bad) { problems++; console.log(`  BAD widget: ${b}`); }
    if (minSizes) {
      for (const n of res.nodes) {
        const [w, h] = (minSizes[n.type] || [0, 0]);
        minSizes[n.type] = [Math.max(w, Math.ceil(n.size[0])), Math.max(h, Math.ceil(n.size[1]))];
      }
    } else for (const o of res.overlaps) { problems++; console.log(`  OVERLAP: ${o}`); }
    for (const n of res.nodes) {
      const at = `at ${n.pos.map(Math.round).join(',')} drawn ${n.size.map(Math.round).join('x')}`;
      console.log(`  #${n.id} ${n.type} ${at} ${JSON.stringify(n.widgets)}`);
    }
    if (api && res.prompt) {
      const before = problems;
      for (const [nid, node] of Object.entries(api)) {
        const got = res.prompt[nid];
        if (!got) { problems++; console.log(`  API DIFF: node ${nid} (${node.class_type}) not in graphToPrompt`); continue; }
        if (got.class_type !== node.class_type) { problems++; console.log(`  API DIFF: node ${nid}: frontend ${got.class_type} vs file ${node.class_type}`); }
        const defined = new Set(res.defined[got.class_type] || []);
        const uiOnly = Object.keys(got.inputs).filter((k) => !defined.has(k) && !(k in node.inputs));
        if (uiOnly.length) console.log(`  (${nid} ${got.class_type}: UI-only widget value(s) ${uiOnly.join(', ')} not compared; the server drops them)`);
        for (const k of new Set([...Object.keys(node.inputs), ...Object.keys(got.inputs).filter((x) => !uiOnly.includes(x))])) {
          const v = node.inputs[k];
          if (JSON.stringify(got.inputs[k]) !== JSON.stringify(v)) {
            problems++;
            console.log(`  API DIFF: ${nid}.${k}: frontend ${JSON.stringify(got.inputs[k])} vs file ${JSON.stringify(v)}`);
          }
        }
      }
      for (const nid of Object.keys(res.prompt)) {
        if (!api[nid]) { problems++; console.log(`  API DIFF: node ${nid} (${res.prompt[nid].class_type}) not in the file`); }
      }
      if (problems === before) console.log('  graphToPrompt() equals the shipped API file');
    }
  };

  for (const f of files) {
    const data = JSON.parse(fs.readFileSync(f, 'utf8'));
    if (minSizes) for (const n of data.nodes || []) n.size = [10, 10];
    const before = consoleErrors.length;
    await page.evaluate(async (d) => { await app.loadGraphData(d, true, true, null, { showMissingNodesDialog: false, showMissingModelsDialog: false }); }, data);
    await page.waitForTimeout(500);
    const api = apiFor(f);
    report(f, await inspect(), api);
    for (const e of consoleErrors.slice(before)) { problems++; console.log(`  CONSOLE: ${e}`); }
    if (queue) {
      const res = await page.evaluate(async (sets) => {
        const applied = [];
        for (const s of sets) {
          const [lhs, raw] = [s.slice(0, s.indexOf('=')), s.slice(s.indexOf('=') + 1)];
          const [type, name] = [lhs.slice(0, lhs.lastIndexOf('.')), lhs.slice(lhs.lastIndexOf('.') + 1)];
          let v; try { v = JSON.parse(raw); } catch (e) { v = raw; }
          for (const n of app.graph._nodes) {
            if (n.type !== type && String(n.id) !== type) continue;
            const w = (n.widgets || []).find((x) => x.name === name);
            if (w) { w.value = v; applied.push(`${n.type}#${n.id}.${name}`); }
          }
        }
        const queued = (await app.graphToPrompt()).output;
        const errors = [];
        const onErr = (e) => errors.push(JSON.stringify(e.detail).slice(0, 2000));
        app.api.addEventListener('execution_error', onErr);
        const t0 = Date.now();
        let started = false;
        const onStart = () => { started = true; };
        app.api.addEventListener('execution_start', onStart);
        try { await app.queuePrompt(0, 1); } catch (e) { errors.push('queuePrompt: ' + e.message); }
        while (Date.now() - t0 < 300000) {
          await new Promise((r) => setTimeout(r, 500));
          const q = await (await fetch('/queue')).json();
          if (started && !q.queue_running.length && !q.queue_pending.length) break;
          if (!started && Date.now() - t0 > 15000) break;
        }
        await new Promise((r) => setTimeout(r, 800));
        app.api.removeEventListener('execution_error', onErr);
        app.api.removeEventListener('execution_start', onStart);
        const texts = [];
        for (const n of app.graph._nodes) {
          const w = (n.widgets || []).find((x) => x.name === '$$node-text-preview');
          if (w) texts.push({ id: n.id, type: n.type, value: String(w.value) });
        }
        const rendered = [];
        for (const span of document.querySelectorAll('.dom-widget span, [class*="dom-widget"] span')) {
          const tags = [...span.querySelectorAll('*')].map((e) => e.tagName.toLowerCase()).filter((t) => t !== 'br' && t !== 'a');
          if (span.textContent.trim()) rendered.push({ text: span.textContent.slice(0, 300), elements: [...new Set(tags)] });
        }
        const check = applied.map((a) => { const [t, k] = a.split('.'); return `${a}=${JSON.stringify(queued[t.split('#')[1]]?.inputs[k])}`.slice(0, 80); });
        return { errors, texts, rendered, started, applied: check, seconds: (Date.now() - t0) / 1000 };
      }, sets);
      console.log(`  set: ${res.applied.join(', ') || '(nothing)'}`);
      console.log(`  queued: ${res.started ? 'ran' : 'DID NOT START'} (${res.seconds} s)`);
      if (!res.started) problems++;
      for (const e of res.errors) { problems++; console.log(`  EXECUTION ERROR: ${e}`); }
      for (const t of res.texts) console.log(`  node text #${t.id} ${t.type}: ${JSON.stringify(t.value)}`);
      for (const r of res.rendered) {
        if (r.elements.length) { problems++; console.log(`  TEXT RENDERED AS HTML (${r.elements.join(', ')}): ${JSON.stringify(r.text)}`); }
        else console.log(`  rendered: ${JSON.stringify(r.text)}`);
      }
    }
    if (thumbs) {
      fs.mkdirSync(thumbs, { recursive: true });
      const p = path.join(thumbs, path.basename(f, '.json') + '.jpg');
      const url = await drawThumbnail(page);
      fs.writeFileSync(p, Buffer.from(url.slice(url.indexOf(',') + 1), 'base64'));
      console.log(`  thumbnail: ${p}`);
    }
    if (shots) {
      fs.mkdirSync(shots, { recursive: true });
      const p = path.join(shots, path.basename(f, '.json') + '.png');
      await page.screenshot({ path: p });
      console.log(`  screenshot: ${p}`);
    }
  }

  if (minSizes) console.log('min sizes: ' + JSON.stringify(minSizes));
  if (templatesPack) {
    // what the template browser lists for the pack, and what a click on each one opens
    const listed = await page.evaluate(async () => (await app.api.fetchApi('/workflow_templates')).json());
    const got = [...(listed[templatesPack] || [])].sort();
    const want = files.map((f) => path.basename(f, '.json')).sort();
    console.log(`templates listed for ${templatesPack}: ${got.join(', ') || '(none)'}`);
    if (JSON.stringify(got) !== JSON.stringify(want)) {
      problems++;
      console.log(`  TEMPLATES DIFF: listed [${got.join(', ')}], expected the given UI files [${want.join(', ')}]`);
    }
    for (const f of files) {
      const stem = path.basename(f, '.json');
      const res = await page.evaluate(async ({ pack, stem }) => {
        const base = `/workflow_templates/${encodeURIComponent(pack)}/${encodeURIComponent(stem)}`;
        const j = await app.api.fetchApi(base + '.json');
        const t = await app.api.fetchApi(base + '.jpg');
        const out = { json: j.ok ? await j.json() : null, jsonStatus: j.status, jpgStatus: t.status, jpgType: t.headers.get('content-type') };
        if (t.ok) {
          try { const bmp = await createImageBitmap(await t.blob()); out.jpgSize = [bmp.width, bmp.height]; } catch (e) { out.jpgError = e.message; }
        }
        return out;
      }, { pack: templatesPack, stem });
      const same = JSON.stringify(res.json) === JSON.stringify(JSON.parse(fs.readFileSync(f, 'utf8')));
      console.log(`  ${stem}: json http ${res.jsonStatus}${same ? ' (the given file)' : ''}, thumbnail http ${res.jpgStatus} ${res.jpgType} ${res.jpgSize ? res.jpgSize.join('x') : res.jpgError || ''}`);
      if (!same) { problems++; console.log(`  TEMPLATE ${stem}: the served template is not ${f}`); }
      if (res.jpgStatus !== 200 || !res.jpgSize || !String(res.jpgType).includes('jpeg')) { problems++; console.log(`  TEMPLATE ${stem}: no thumbnail ${stem}.jpg`); }
    }
    // the template browser itself: open it, pick the pack (under "Extensions" in 1.49.6, "Custom Nodes" in
    // 1.27.10) and read the cards: one title per template and a loaded picture each
    for (let i = 0; i < 3; i++) { await page.keyboard.press('Escape'); await page.waitForTimeout(100); }
    const opened = await page.evaluate(async () => {
      try { await app.extensionManager.command.execute('Comfy.BrowseTemplates'); return true; } catch (e) { return e.message; }
    });
    await page.waitForTimeout(2500);
    const entry = page.locator('[role=dialog]').getByText(templatesPack, { exact: true }).first();
    if (opened !== true || !(await entry.count())) {
      problems++;
      console.log(`  TEMPLATE BROWSER: ${opened !== true ? 'did not open: ' + opened : 'no entry ' + templatesPack}`);
    } else {
      await entry.click();
      await page.waitForTimeout(2500);
      // the cards' pictures load lazily, and 1.27.10 mounts only the cards in view: scroll through the dialog
      // and collect, on the way, the templates whose card showed a loaded picture
      const seen = new Set();
      let titles = new Set();
      const look = async () => {
        const r = await page.evaluate((want) => {
          const dialog = [...document.querySelectorAll('[role=dialog]')].pop();
          const texts = new Set([...dialog.querySelectorAll('*')].filter((e) => !e.children.length)
            .map((e) => e.textContent.trim()));
          // each loaded picture counts for the template whose title its card (the nearest ancestor naming
          // exactly one template) shows
          const cardOf = (img) => {
            for (let e = img.parentElement; e && e !== dialog; e = e.parentElement) {
              const names = want.filter((w) => [...e.querySelectorAll('*')].some((c) => !c.children.length
                && c.textContent.trim() === w));
              if (names.length === 1) return names[0];
              if (names.length > 1) return null;
            }
            return null;
          };
          const pics = [...dialog.querySelectorAll('img')].filter((i) => i.naturalWidth > 0
            && (i.currentSrc.startsWith('blob:') || i.currentSrc.includes('/workflow_templates/')))
            .map(cardOf).filter((n) => n !== null);
          return { titles: want.filter((w) => texts.has(w)), pics };
        }, want);
        r.pics.forEach((p) => seen.add(p));
        titles = new Set([...titles, ...r.titles]);
      };
      await look();
      for (let step = 0; step < 20; step++) {
        const more = await page.evaluate(() => {
          const dialog = [...document.querySelectorAll('[role=dialog]')].pop();
          const boxes = [...dialog.querySelectorAll('*')].filter((e) => e.scrollHeight > e.clientHeight + 4
            && getComputedStyle(e).overflowY !== 'visible');
          let moved = false;
          for (const b of boxes) {
            const before = b.scrollTop;
            b.scrollTop = before + b.clientHeight * 0.8;
            moved = moved || b.scrollTop !== before;
          }
          return moved;
        });
        await page.waitForTimeout(700);
        await look();
        if (!more) break;
      }
      const shown = { titles: [...titles], pictures: seen.size };
      console.log(`  template browser, ${templatesPack}: ${shown.titles.length} of ${want.length} titles shown, ${shown.pictures} pictures loaded`);
      if (shown.titles.length !== want.length || shown.pictures !== want.length) {
        problems++;
        console.log(`  TEMPLATE BROWSER: missing ${want.filter((w) => !shown.titles.includes(w)).join(', ') || '(titles ok)'}; pictures ${shown.pictures}`);
      }
      if (shots) {
        fs.mkdirSync(shots, { recursive: true });
        await page.screenshot({ path: path.join(shots, 'template_browser.png') });
        console.log(`  screenshot: ${path.join(shots, 'template_browser.png')}`);
      }
    }
    for (let i = 0; i < 3; i++) { await page.keyboard.press('Escape'); await page.waitForTimeout(100); }
  }

  for (const v of videos) {
    await page.evaluate(() => app.graph.clear());
    const before = consoleErrors.length;
    const sub = path.dirname(v) === '.' ? '' : path.dirname(v);
    const url = `${server}/view?filename=${encodeURIComponent(path.basename(v))}&subfolder=${encodeURIComponent(sub)}&type=output`;
    const ok = await page.evaluate(async ({ url, name }) => {
      const r = await fetch(url);
      if (!r.ok) return `fetch ${url}: http ${r.status}`;
      const blob = await r.blob();
      await app.handleFile(new File([blob], name, { type: 'video/mp4' }));
      return 'ok';
    }, { url, name: path.basename(v) });
    await page.waitForTimeout(1000);
    const res = await inspect();
    if (ok !== 'ok') { problems++; console.log(`${v}: ${ok}`); continue; }
    console.log(`dropped ${v}: restored ${res.nodes.length} nodes`);
    if (!res.nodes.length) { problems++; console.log('  NO GRAPH restored from the file (no prompt/workflow metadata?)'); }
    report(`  restored from ${v}`, res, null);
    for (const e of consoleErrors.slice(before)) { problems++; console.log(`  CONSOLE: ${e}`); }
    if (shots) {
      const p = path.join(shots, 'dropped_' + path.basename(v, '.mp4') + '.png');
      await page.screenshot({ path: p });
      console.log(`  screenshot: ${p}`);
    }
  }
} finally {
  await browser.close();
}
console.log(problems ? `${problems} problem(s)` : 'no problems');
process.exit(problems ? 1 : 0);
