// Load UI-format workflows into a running ComfyUI's real browser frontend and report problems.
//
//   NODE_PATH=/path/to/node_modules node tools/comfy_frontend_check.mjs [--server URL] [--screenshot DIR]
//        [--video FILE_IN_OUTPUT ...] [--queue [--set Type.widget=VALUE ...]] example_workflows/ovi_text_to_av.json ...
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
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--server') server = args[++i];
  else if (args[i] === '--screenshot') shots = args[++i];
  else if (args[i] === '--video') videos.push(args[++i]);
  else if (args[i] === '--queue') queue = true;
  else if (args[i] === '--set') sets.push(args[++i]);
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

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-component-update', '--no-first-run', '--disable-sync'],
});
let problems = 0;
const consoleErrors = [];
try {
  const page = await browser.newPage({ viewport: { width: 1600, height: 1000 } });
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
  const nTypes = await page.evaluate(() => Object.keys(LiteGraph.registered_node_types).length);
  const ovi = await page.evaluate(() => Object.keys(LiteGraph.registered_node_types).filter((t) => t.startsWith('Ovi')));
  console.log(`frontend up: ${nTypes} node types, Ovi: ${ovi.join(', ')}`);

  const inspect = async () => page.evaluate(async () => {
    const out = { missing: [], bad: [], nodes: [] };
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
      out.nodes.push({ id: n.id, type: n.type, widgets: w });
    }
    let prompt = null;
    try { prompt = (await app.graphToPrompt()).output; } catch (e) { out.bad.push('graphToPrompt failed: ' + e.message); }
    out.prompt = prompt;
    return out;
  });

  const report = (label, res, api) => {
    const uniq = [...new Set(res.missing)];
    console.log(`${label}: ${res.nodes.length} nodes`);
    if (uniq.length) { problems++; console.log(`  MISSING node types: ${uniq.join(', ')}`); }
    for (const b of res.bad) { problems++; console.log(`  BAD widget: ${b}`); }
    for (const n of res.nodes) console.log(`  #${n.id} ${n.type} ${JSON.stringify(n.widgets)}`);
    if (api && res.prompt) {
      for (const [nid, node] of Object.entries(api)) {
        const got = res.prompt[nid];
        if (!got) { problems++; console.log(`  API DIFF: node ${nid} (${node.class_type}) not in graphToPrompt`); continue; }
        for (const [k, v] of Object.entries(node.inputs)) {
          if (JSON.stringify(got.inputs[k]) !== JSON.stringify(v)) {
            problems++;
            console.log(`  API DIFF: ${nid}.${k}: frontend ${JSON.stringify(got.inputs[k])} vs file ${JSON.stringify(v)}`);
          }
        }
      }
    }
  };

  for (const f of files) {
    const data = JSON.parse(fs.readFileSync(f, 'utf8'));
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
    if (shots) {
      fs.mkdirSync(shots, { recursive: true });
      const p = path.join(shots, path.basename(f, '.json') + '.png');
      await page.screenshot({ path: p });
      console.log(`  screenshot: ${p}`);
    }
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
