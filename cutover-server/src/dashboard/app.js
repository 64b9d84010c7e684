// Cutover dashboard: a small single-page app over the JSON API (/api/v1).
// Views are chosen by the URL fragment: #/, #/env/NAME, #/run/ID, #/runs,
// #/audit, #/scale. The current view polls what it shows about once a second.
// Every piece of data reaches the DOM as text (textContent), never as HTML.
// Every API call carries the API token (Authorization: Bearer) kept in this
// tab's sessionStorage: typed into the sign-in form, or handed over once in
// the URL as #token=... (or #/run/5&token=...), which is then removed from
// the address bar.
'use strict';

const API = '/api/v1';
const POLL_MS = 1000;
const STAGES = {
  source: 'Source', version_info: 'Prepare versions information', approval: 'Approval',
  build: 'Build and prepare', message_broker: 'Configure message broker',
  pre_deploy_hook: 'Pre-deploy hook', pre_deploy_config: 'Pre-deployment configuration',
  deploy_scheduler: 'Deploy scheduler', install: 'Install', deploy_services: 'Deploy services',
  update_deployed_version: 'Update deployed version',
  post_deploy_config: 'Post-deployment configuration', post_deploy_hook: 'Post-deploy hook',
};
const TERMINAL = ['succeeded', 'failed', 'cancelled', 'superseded', 'interrupted'];
const TOKEN_KEY = 'cutover.token';

const main = document.getElementById('main');
let generation = 0; // bumped on every navigation; stale polls stop themselves
let appName = null;

// ---- small helpers -------------------------------------------------------

// el('a', {href: '#/', class: 'x'}, 'text', child...): strings become text nodes.
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'class') node.className = v;
    else if (k === 'onclick') node.addEventListener('click', v);
    else node.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

const short = (v) => (!v ? '—' : /^[0-9a-f]{40}$/.test(v) ? v.slice(0, 12) : v);
const sha = (v) => el('code', { title: v || '' }, short(v));
const time = (ms) => (ms ? new Date(ms).toLocaleString() : '—');

function duration(from, to) {
  if (!from) return '';
  const ms = Math.max(0, (to || Date.now()) - from);
  if (ms < 10000) return `${(ms / 1000).toFixed(1)} s`;
  const s = Math.round(ms / 1000);
  return s < 60 ? `${s} s` : `${Math.floor(s / 60)} min ${s % 60} s`;
}

function uptime(s) {
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

// Only http(s) links from data; anything else is shown as text.
function link(url, text) {
  return /^https?:\/\//i.test(url || '') ? el('a', { href: url }, text || url) : text || url || '—';
}

function table(caption, headers, rows, empty) {
  if (!rows.length) return el('p', { class: 'muted' }, empty || 'None.');
  return el('table', {},
    el('caption', {}, caption),
    el('thead', {}, el('tr', {}, ...headers.map((h) => el('th', { scope: 'col' }, h)))),
    el('tbody', {}, ...rows.map((r) => el('tr', {}, ...r.map((c) => el('td', {}, c))))));
}

function badge(state) {
  return el('span', { class: `badge s-${state}` }, String(state).replace(/_/g, ' '));
}

function token() { return (sessionStorage.getItem(TOKEN_KEY) || '').trim(); }

// An API answer that says the token is missing or no longer works.
class Unauthorized extends Error {}

async function api(path, opts) {
  const headers = { Accept: 'application/json', ...((opts && opts.headers) || {}) };
  if (token()) headers.Authorization = `Bearer ${token()}`;
  const res = await fetch(API + path, { ...opts, headers });
  let body = null;
  try { body = await res.json(); } catch (_) { /* not JSON */ }
  if (!res.ok) {
    const msg = (body && body.error && body.error.message) || `${res.status} ${res.statusText}`;
    if (res.status === 401) {
      showSignedOut(msg);
      throw new Unauthorized(msg);
    }
    throw new Error(msg);
  }
  return body;
}

async function write(path, payload) {
  return api(path, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify(payload),
  });
}

// Runs `tick` now and then every POLL_MS until the view changes or it returns false.
function poll(tick, errorBox) {
  const gen = generation;
  const loop = async () => {
    if (gen !== generation) return;
    let again = true;
    try {
      again = (await tick()) !== false;
      errorBox.replaceChildren();
    } catch (e) {
      if (e instanceof Unauthorized) {
        errorBox.replaceChildren(el('p', { class: 'error' },
          `Sign in with an API token (form at the top of the page): ${e.message}`));
        again = false;
      } else {
        errorBox.replaceChildren(el('p', { class: 'error' }, `Cannot reach the server: ${e.message}`));
      }
    }
    if (again && gen === generation) setTimeout(loop, POLL_MS);
  };
  loop();
}

function section(title, ...children) {
  return el('section', {}, el('h2', {}, title), ...children);
}

function view(title, ...parts) {
  const err = el('div', { role: 'alert' });
  main.replaceChildren(el('h1', {}, title), err, ...parts);
  document.title = `${title} · Cutover`;
  return err;
}

// ---- views ---------------------------------------------------------------

function runRows(runs, withEnv) {
  return runs.map((r) => [
    el('a', { href: `#/run/${r.id}` }, `#${r.id}`),
    ...(withEnv ? [el('a', { href: `#/env/${encodeURIComponent(r.env)}` }, r.env)] : []),
    r.kind.replace(/_/g, ' '), badge(r.state), sha(r.version || r.target_version),
    r.current_stage ? STAGES[r.current_stage] || r.current_stage : '—',
    r.requested_by, time(r.created_at_ms),
  ]);
}
const RUN_HEADERS = ['Run', 'Kind', 'State', 'Version', 'Stage', 'Requested by', 'Requested'];
const RUN_HEADERS_ENV = ['Run', 'Environment', ...RUN_HEADERS.slice(1)];

function homeView() {
  const envs = el('div', {}, el('p', { class: 'muted' }, 'Loading…'));
  const runs = el('div');
  const create = el('div');
  const err = view('Environments', envs, create, section('Recent runs', runs));
  poll(async () => {
    const [list, recent] = await Promise.all([api('/environments'), api('/runs?limit=10')]);
    const templates = list.filter((e) => e.kind === 'integration-template').map((e) => e.name);
    if (templates.length && !create.firstChild) {
      create.replaceChildren(section('New integration environment', integrationForm(templates)));
    }
    envs.replaceChildren(table('Every environment, with the versions of its parameter store',
      ['Environment', 'Tier', 'Branch', 'Desired', 'Built', 'Deployed', 'Approval'],
      list.map((e) => [
        el('a', { href: `#/env/${encodeURIComponent(e.name)}` }, e.name), e.tier, e.branch || 'HEAD',
        el('span', {}, sha(e.desired_version),
          e.desired_version === 'latest' ? el('span', { class: 'muted' }, ' → ', sha(e.desired_resolved)) : null),
        sha(e.last_build_version), sha(e.last_deployed_version), e.approval ? 'required' : 'no',
      ]), 'No environments are configured.'));
    runs.replaceChildren(table('The ten newest runs', RUN_HEADERS_ENV, runRows(recent, true), 'No runs yet.'));
  }, err);
}

function runsView() {
  const runs = el('div');
  const err = view('Runs', runs);
  poll(async () => {
    const list = await api('/runs?limit=50');
    runs.replaceChildren(table('The fifty newest runs', RUN_HEADERS_ENV, runRows(list, true), 'No runs yet.'));
  }, err);
}

function envView(env) {
  const summary = el('div');
  const services = el('div');
  const runs = el('div');
  const history = el('div');
  const releaseBox = el('div');
  const err = view(`Environment ${env}`, summary, section('Release', releaseBox),
    section('Services', services), section('Recent runs', runs),
    section('History of desired_version', history));
  const enc = encodeURIComponent(env);
  poll(async () => {
    if (!appName) appName = (await api('/health')).app;
    const [e, st, rs, hist] = await Promise.all([
      api(`/environments/${enc}`), api(`/environments/${enc}/status`),
      api(`/runs?env=${enc}&limit=10`),
      // Never set yet (a new environment): no history rather than an error.
      api(`/history/${encodeURIComponent(`${appName}-${env}`)}/desired_version`).catch((e) => {
        if (e instanceof Unauthorized) throw e;
        return [];
      }),
    ]);
    summary.replaceChildren(el('dl', { class: 'facts' },
      el('dt', {}, 'Tier'), el('dd', {}, e.tier),
      el('dt', {}, 'Branch'), el('dd', {}, e.branch || 'HEAD', e.branch_only ? ' (only this branch)' : ''),
      el('dt', {}, 'Desired'), el('dd', {}, sha(e.desired_version),
        e.desired_version === 'latest' ? el('span', {}, ' → ', sha(e.desired_resolved)) : null),
      el('dt', {}, 'Last built'), el('dd', {}, sha(e.last_build_version)),
      el('dt', {}, 'Last deployed'), el('dd', {}, sha(e.last_deployed_version)),
      el('dt', {}, 'Serving'), el('dd', {}, sha(st.serving_version)),
      el('dt', {}, 'Warm (fast rollback)'), el('dd', {}, sha(st.warm_version)),
      el('dt', {}, 'Approval'), el('dd', {}, e.approval ? 'required' : 'not required'),
      el('dt', {}, 'Kind'), el('dd', {}, e.kind || 'static', e.template ? ` (from ${e.template})` : ''),
      e.expires_at_ms ? el('dt', {}, 'Expires') : null,
      e.expires_at_ms ? el('dd', {}, time(e.expires_at_ms)) : null,
      e.expired_at_ms ? el('dt', {}, 'Expired') : null,
      e.expired_at_ms ? el('dd', { class: 'error' }, time(e.expired_at_ms)) : null));
    if (!releaseBox.firstChild) {
      releaseBox.replaceChildren(releaseForm(env, e.approval),
        e.kind === 'integration' ? deleteButton(env) : '');
    }
    services.replaceChildren(...(st.services.length ? st.services.map((s) => el('div', { class: 'service' },
      el('h3', {}, s.name, s.public ? '' : el('span', { class: 'muted' }, ' (not public)'),
        el('span', { class: 'muted', 'data-replicas': String(s.replicas) }, ` · ${s.replicas} replica${s.replicas === 1 ? '' : 's'}`)),
      s.url || s.port_url ? el('p', {}, link(s.url), s.port_url ? ' · ' : '', s.port_url ? link(s.port_url) : '') : null,
      table(`Instances of ${s.name}`,
        ['Instance', 'Role', 'Version (from the process)', 'Health', 'Restarts', 'Uptime', 'State', 'PID'],
        s.instances.map((i) => [
          i.id, i.role, sha(i.version),
          el('span', { class: i.healthy === true ? 'ok' : i.healthy === false ? 'bad' : 'muted' },
            i.healthy === true ? 'healthy' : i.healthy === false ? 'unhealthy' : 'unknown'),
          String(i.restarts), uptime(i.uptime_s), i.state, i.pid ? String(i.pid) : '—',
        ]), 'No instances running.'))) : [el('p', { class: 'muted' }, 'No services.')]));
    runs.replaceChildren(table(`The ten newest runs of ${env}`, RUN_HEADERS, runRows(rs, false), 'No runs yet.'));
    history.replaceChildren(table('Every value it had, newest first', ['Version', 'Value', 'Set by', 'At'],
      hist.map((p) => [String(p.version), sha(p.value), p.actor, time(p.at_ms)]), 'Never set.'));
  }, err);
}

// Creates an integration environment for a branch from a template, optionally deploying it.
function integrationForm(templates) {
  const template = el('select', { id: 'new-template' }, ...templates.map((t) => el('option', { value: t }, t)));
  const branch = el('input', { id: 'new-branch', placeholder: 'feature/login', maxlength: 200, required: true });
  const deploy = el('input', { id: 'new-deploy', type: 'checkbox', checked: true });
  const msg = el('p', { role: 'alert', class: 'error' });
  const form = el('form', { class: 'release' },
    el('label', { for: 'new-template' }, 'Template'), template,
    el('label', { for: 'new-branch' }, 'Branch'), branch,
    el('label', { for: 'new-deploy' }, deploy, ' deploy its head'),
    el('button', { type: 'submit' }, 'Create'), msg);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    msg.replaceChildren();
    try {
      const made = await write('/environments',
        { template: template.value, branch: branch.value.trim(), deploy: deploy.checked });
      location.hash = made.run ? `#/run/${made.run.id}` : `#/env/${encodeURIComponent(made.environment.name)}`;
    } catch (e) {
      msg.textContent = e.message;
    }
  });
  return form;
}

// Deletes an integration environment after a confirmation (its runs and audit stay).
function deleteButton(env) {
  const msg = el('span', { role: 'alert', class: 'error' });
  const go = async () => {
    if (!window.confirm(`Delete ${env}? Its services stop and its directory goes; runs and audit stay.`)) return;
    try {
      await api(`/environments/${encodeURIComponent(env)}`, { method: 'DELETE' });
      location.hash = '#/';
    } catch (e) {
      msg.textContent = e.message;
    }
  };
  return el('p', {}, el('button', { type: 'button', class: 'reject', onclick: go }, `Delete ${env}`), ' ', msg);
}

// Queues a release of a version (any ref: branch, tag, short SHA, latest) and opens its run.
function releaseForm(env, approval) {
  const input = el('input', { id: 'release-version', name: 'version', placeholder: 'main, v1.2, 1a2b3c4, latest', maxlength: 200 });
  const msg = el('p', { role: 'alert', class: 'error' });
  const go = async (ev) => {
    ev.preventDefault();
    msg.replaceChildren();
    const version = input.value.trim();
    try {
      const run = await write(`/environments/${encodeURIComponent(env)}/releases`, version ? { version } : {});
      location.hash = `#/run/${run.id}`;
    } catch (e) {
      msg.textContent = e.message;
    }
  };
  const form = el('form', { class: 'release' },
    el('label', { for: 'release-version' }, 'Version (empty: the current desired_version)'), input,
    el('button', { type: 'submit' }, approval ? 'Request release (needs approval)' : 'Release'), msg);
  form.addEventListener('submit', go);
  return form;
}

function scaleView() {
  const list = el('div');
  const msg = el('p', { role: 'alert', class: 'error' });
  const comment = el('input', { id: 'scale-comment', maxlength: 2000, placeholder: 'why (required to reject)' });
  const err = view('Scale changes',
    el('div', { class: 'decision' }, el('label', { for: 'scale-comment' }, 'Comment for your decision'), comment),
    msg, list);
  const decide = (id, what, refresh) => async () => {
    msg.replaceChildren();
    const text = comment.value.trim();
    if (what === 'reject' && !text) {
      msg.textContent = 'A rejection needs a reason: write it in the comment field first.';
      comment.focus();
      return;
    }
    try {
      await write(`/scale-requests/${id}/${what}`, text ? { comment: text } : {});
      comment.value = '';
      refresh();
    } catch (e) {
      msg.textContent = e.message;
    }
  };
  const tick = async () => {
    const reqs = await api('/scale-requests');
    list.replaceChildren(table('Every replica change, newest first: applied at once on dev, approved by an admin elsewhere',
      ['#', 'Environment', 'Service', 'Change', 'State', 'Requested by', 'Comment', 'Decided by', ''],
      reqs.map((r) => [String(r.id),
        el('a', { href: `#/env/${encodeURIComponent(r.env)}` }, r.env), r.service, `${r.from} → ${r.to}`,
        badge(r.state), r.requested_by, r.comment || '', r.decided_by || '—',
        r.state === 'pending' ? el('span', { class: 'buttons' },
          el('button', { type: 'button', class: 'approve', onclick: decide(r.id, 'approve', tick) }, 'Approve'),
          el('button', { type: 'button', class: 'reject', onclick: decide(r.id, 'reject', tick) }, 'Reject'))
          : r.error ? el('span', { class: 'error' }, r.error) : '',
      ]), 'No scale changes yet.'));
  };
  poll(tick, err);
}

function stageBox(s) {
  const status = s.status;
  return el('li', { class: `stage st-${status}`, 'data-stage': s.stage, 'data-status': status },
    el('span', { class: 'stage-name' }, STAGES[s.stage] || s.stage),
    el('span', { class: 'stage-status' }, status.replace(/_/g, ' ')),
    s.started_at_ms ? el('span', { class: 'stage-time' }, duration(s.started_at_ms, s.ended_at_ms)) : null,
    s.note ? el('span', { class: 'stage-note' }, s.note) : null);
}

// The decision is about the SHA fixed when the run was requested: it is shown in full and
// sent with the decision, so the server refuses it if the run deploys anything else.
function decisionForm(run, refresh) {
  const id = run.id;
  const version = run.target_version || '';
  const comment = el('textarea', { id: 'decision-comment', rows: 2, maxlength: 2000 });
  const msg = el('p', { role: 'alert', class: 'error' });
  const decide = (what) => async () => {
    msg.replaceChildren();
    const text = comment.value.trim();
    if (what === 'reject' && !text) {
      msg.textContent = 'A rejection needs a comment: say why.';
      comment.focus();
      return;
    }
    try {
      const body = version ? { version } : {};
      if (text) body.comment = text;
      await write(`/runs/${id}/${what}`, body);
      comment.value = '';
      refresh();
    } catch (e) {
      msg.textContent = e.message;
    }
  };
  return el('form', { class: 'decision' },
    el('p', { class: 'decision-version' }, 'You decide on version ',
      el('code', { class: 'approval-sha' }, version || 'none fixed'),
      ` (requested by ${run.requested_by}, chosen by ${run.version_chosen_by || 'unknown'})`),
    el('label', { for: 'decision-comment' }, 'Comment (required to reject)'), comment,
    el('div', { class: 'buttons' },
      el('button', { type: 'button', class: 'approve', onclick: decide('approve') }, 'Approve'),
      el('button', { type: 'button', class: 'reject', onclick: decide('reject') }, 'Reject')),
    msg);
}

function runView(id) {
  const facts = el('div');
  const stages = el('ol', { class: 'stages', 'aria-label': 'Pipeline stages' });
  const approvals = el('div');
  const decision = el('div');
  const log = el('pre', { class: 'log', tabindex: 0, 'aria-label': 'Run log', 'aria-live': 'off' });
  const err = view(`Run #${id}`, facts, section('Pipeline', stages),
    section('Approval', decision, approvals), section('Log', log));
  let after = 0;
  let form = null;
  let tick = null;
  tick = async () => {
    const run = await api(`/runs/${id}`);
    facts.replaceChildren(el('dl', { class: 'facts' },
      el('dt', {}, 'Environment'), el('dd', {}, el('a', { href: `#/env/${encodeURIComponent(run.env)}` }, run.env)),
      el('dt', {}, 'Kind'), el('dd', {}, run.kind.replace(/_/g, ' ')),
      el('dt', {}, 'State'), el('dd', {}, badge(run.state)),
      el('dt', {}, 'Version'), el('dd', {}, sha(run.version || run.target_version)),
      el('dt', {}, 'Previous'), el('dd', {}, sha(run.previous_version)),
      el('dt', {}, 'Requested by'), el('dd', {}, run.requested_by, run.reason ? ` — ${run.reason}` : ''),
      el('dt', {}, 'Version chosen by'), el('dd', {}, run.version_chosen_by || '—'),
      el('dt', {}, 'Requested'), el('dd', {}, time(run.created_at_ms)),
      el('dt', {}, 'Duration'), el('dd', {}, duration(run.started_at_ms, run.ended_at_ms) || '—'),
      run.superseded_by ? el('dt', {}, 'Superseded by') : null,
      run.superseded_by ? el('dd', {}, el('a', { href: `#/run/${run.superseded_by}` }, `#${run.superseded_by}`)) : null,
      run.error ? el('dt', {}, 'Error') : null,
      run.error ? el('dd', { class: 'error' }, run.error) : null));
    stages.replaceChildren(...run.stages.map(stageBox));
    approvals.replaceChildren(table('Decisions', ['By', 'Decision', 'Comment', 'At'],
      run.approvals.map((a) => [a.actor, a.decision, a.comment || '', time(a.at_ms)]), 'No decisions.'));
    if (run.state === 'awaiting_approval') {
      if (!form) { form = decisionForm(run, () => tick()); decision.replaceChildren(form); }
    } else {
      form = null;
      decision.replaceChildren();
    }
    const lines = await api(`/runs/${id}/logs?after=${after}`);
    if (lines.length) {
      const stuck = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
      log.append(lines.map((l) => `[${l.stage}] ${l.line}\n`).join(''));
      after = lines[lines.length - 1].seq;
      if (stuck) log.scrollTop = log.scrollHeight;
    }
    // A finished run changes no more once its last lines are read.
    return !(TERMINAL.includes(run.state) && !lines.length);
  };
  poll(tick, err);
}

function auditView() {
  const list = el('div');
  const err = view('Audit log', list);
  poll(async () => {
    const entries = await api('/audit?limit=100');
    list.replaceChildren(table('The hundred newest changes, newest first', ['#', 'At', 'Actor', 'Action', 'Target', 'Detail'],
      entries.map((a) => [String(a.id), time(a.at_ms), a.actor, a.action, a.target,
        el('code', { class: 'detail' }, JSON.stringify(a.detail))]), 'Nothing recorded yet.'));
  }, err);
}

// ---- routing and signing in -------------------------------------------------

function route() {
  generation += 1;
  const hash = decodeURIComponent(location.hash.replace(/^#\/?/, ''));
  const [what, arg] = [hash.split('/')[0], hash.split('/').slice(1).join('/')];
  if (what === 'env' && arg) envView(arg);
  else if (what === 'run' && /^\d+$/.test(arg)) runView(Number(arg));
  else if (what === 'runs') runsView();
  else if (what === 'audit') auditView();
  else if (what === 'scale') scaleView();
  else homeView();
  main.focus({ preventScroll: true });
}

// A token handed over in the URL (#token=T, or #/run/5&token=T) is kept for
// this tab and removed from the address bar and history at once.
function takeTokenFromUrl() {
  const m = location.hash.match(/(^#|&)token=([^&]*)/);
  if (!m) return;
  sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(m[2]));
  let rest = location.hash.replace(m[0], m[1] === '#' ? '#' : '');
  if (rest === '#' || rest === '') rest = '#/';
  history.replaceState(null, '', location.pathname + location.search + rest);
}

function showSignedOut(message) {
  document.getElementById('signin-form').hidden = false;
  document.getElementById('signed-in').hidden = true;
  document.getElementById('signin-status').textContent = message ? 'Not signed in.' : '';
}

async function showWho() {
  if (!token()) { showSignedOut(''); return; }
  try {
    const me = await api('/whoami');
    document.getElementById('signin-form').hidden = true;
    document.getElementById('signed-in').hidden = false;
    document.getElementById('who').textContent = me.name;
  } catch (_) { /* api() showed the form */ }
}

function setupSignIn() {
  const input = document.getElementById('token');
  document.getElementById('signin-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, input.value.trim());
    input.value = '';
    await showWho();
    route();
  });
  document.getElementById('signout').addEventListener('click', () => {
    sessionStorage.removeItem(TOKEN_KEY);
    showSignedOut('');
    route();
  });
}

takeTokenFromUrl();
setupSignIn();
showWho();
window.addEventListener('hashchange', route);
route();
api('/health').then((h) => {
  appName = h.app;
  document.getElementById('footer').textContent = `${h.app} · Cutover ${h.cutover_version}`;
}).catch(() => {});
