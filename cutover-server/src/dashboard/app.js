// Cutover dashboard: a small single-page app over the JSON API (/api/v1).
// Views are chosen by the URL fragment: #/, #/env/NAME, #/run/ID, #/runs,
// #/audit, #/scale, #/tokens. A view re-reads what it shows when the server's
// event stream (live.js) says something changed, and polls only while that
// stream is down. Every piece of data reaches the DOM as text (textContent),
// never as HTML. Every API call carries the API token (Authorization: Bearer)
// kept in this tab's sessionStorage: typed into the sign-in form, or handed over
// once in the URL as #token=... (or #/run/5&token=...), which is then removed
// from the address bar at once. A deep link (#/run/5) opened without a token
// shows the sign-in form and, once signed in, the view it names.
'use strict';

const API = '/api/v1';
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
const ROLES = ['viewer', 'deployer', 'approver', 'admin'];

const main = document.getElementById('main');
let generation = 0; // bumped on every navigation; stale polls stop themselves
let appName = null;
let me = null; // GET /whoami: {name, grants: {default, envs}}

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

// "5 min ago", with the exact time as a tooltip.
function ago(ms) {
  if (!ms) return '—';
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  const text = s < 10 ? 'just now' : s < 60 ? `${s} s ago` : s < 3600 ? `${Math.floor(s / 60)} min ago`
    : s < 172800 ? `${Math.floor(s / 3600)} h ago` : `${Math.floor(s / 86400)} days ago`;
  return el('time', { datetime: new Date(ms).toISOString(), title: time(ms) }, text);
}

// The signed-in token's role on an environment, as an index into ROLES (-1: none).
function roleOn(env) {
  if (!me) return -1;
  const envs = me.grants.envs || {};
  return Math.max(ROLES.indexOf(envs[env]), ROLES.indexOf(me.grants.default));
}
const may = (env, role) => roleOn(env) >= ROLES.indexOf(role);
const isAdmin = () => Boolean(me && me.grants.default === 'admin');

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

// A sync or health judgement: its word as a badge, its reason as the tooltip.
function assessment(what, a) {
  const word = { in_sync: 'in sync', drift: 'drift', healthy: 'healthy', degraded: 'degraded' }[a.state]
    || (what === 'sync' ? 'not deployed' : 'no instances');
  return el('span', { class: `badge g-${a.state}`, title: `${what}: ${a.reason}`, 'data-glance': what, 'aria-label': `${what} ${word}: ${a.reason}` }, word);
}

// Asks first; false when the person said no.
function confirmed(question) { return window.confirm(question); }

// Replaces `box`'s children with `make()` only when `key` changed: a refresh must not reset
// a choice being made or wipe a refusal being read.
function keep(box, key, make) {
  if (box.dataset.key === key) return;
  box.dataset.key = key;
  box.replaceChildren(make());
}

// A button that runs `action` (after `question`, when given) and shows the API's
// refusal next to it.
function actionButton(label, attrs, question, action) {
  const msg = el('span', { role: 'alert', class: 'error action-error' });
  const button = el('button', { type: 'button', ...attrs }, label);
  button.addEventListener('click', async () => {
    msg.replaceChildren();
    if (question && !confirmed(question)) return;
    button.disabled = true;
    try {
      await action();
    } catch (e) {
      msg.textContent = e.message;
    } finally {
      button.disabled = false;
    }
  });
  return el('span', { class: 'action' }, button, msg);
}

function token() { return (sessionStorage.getItem(TOKEN_KEY) || '').trim(); }

// An API answer that says the token is missing or no longer works.
class Unauthorized extends Error {}

async function api(path, opts) {
  const headers = { Accept: 'application/json', ...((opts && opts.headers) || {}) };
  const sent = token();
  if (sent) headers.Authorization = `Bearer ${sent}`;
  const res = await fetch(API + path, { ...opts, headers });
  let body = null;
  try { body = await res.json(); } catch (_) { /* not JSON */ }
  if (!res.ok) {
    const msg = (body && body.error && body.error.message) || `${res.status} ${res.statusText}`;
    if (res.status === 401) {
      // A refusal of a request sent before the current sign-in (the page's first look, without
      // a token, answered after the token was entered) says nothing about the current token.
      if (token() === sent) showSignedOut(msg);
      throw new Unauthorized(msg);
    }
    throw new Error(msg);
  }
  return body;
}

async function write(path, payload, method) {
  return api(path, {
    method: method || 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify(payload),
  });
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
    r.requested_by, ago(r.ended_at_ms || r.created_at_ms),
  ]);
}
const RUN_HEADERS = ['Run', 'Kind', 'State', 'Version', 'Requested by', 'Updated'];
const RUN_HEADERS_ENV = ['Run', 'Environment', ...RUN_HEADERS.slice(1)];

// The last run in words: "succeeded 5 min ago", linked to the run.
function lastRun(r) {
  if (!r) return el('span', { class: 'muted' }, 'no runs yet');
  const when = r.ended_at_ms || r.created_at_ms;
  return el('span', { class: 'last-run' }, el('a', { href: `#/run/${r.id}` }, `#${r.id}`), ' ',
    badge(r.state), ' ', ago(when));
}

// Who has to act on the runs waiting for an approval.
function approvalMarker(e) {
  const waiting = e.awaiting_approval || [];
  if (!waiting.length) return e.approval ? el('span', { class: 'muted' }, 'required') : el('span', { class: 'muted' }, '—');
  return el('span', {}, ...waiting.map((r) => {
    const mine = me && r.requested_by === me.name;
    const yours = !mine && may(e.name, 'approver');
    return el('a', {
      href: `#/run/${r.id}`, class: yours ? 'wait-you' : 'wait-other', 'data-approval': yours ? 'yours' : 'other',
    }, yours ? `⏳ waiting for your approval (#${r.id})`
      : mine ? `waiting for another approver (#${r.id}, you requested it)` : `waiting for an approver (#${r.id})`);
  }));
}

function homeView() {
  const envs = el('div', {}, el('p', { class: 'muted' }, 'Loading…'));
  const templates = el('div');
  const runs = el('div');
  const create = el('div');
  const err = view('Environments', envs, templates, create, section('Recent runs', runs));
  watch(async () => {
    const [list, recent] = await Promise.all([api('/environments'), api('/runs?limit=10')]);
    const real = list.filter((e) => e.kind !== 'integration-template');
    const tmpl = list.filter((e) => e.kind === 'integration-template');
    if (tmpl.length && !create.firstChild) {
      create.replaceChildren(section('New integration environment', integrationForm(tmpl.map((e) => e.name))));
    }
    envs.replaceChildren(table('Every environment: in sync (deployed = desired), healthy (every serving instance up), its last run',
      ['Environment', 'Status', 'Last run', 'Approval', 'Deployed', 'Desired', 'Tier', 'Branch'],
      real.map((e) => [
        el('a', { href: `#/env/${encodeURIComponent(e.name)}` }, e.name),
        el('span', { class: 'glance' }, assessment('sync', e.sync), ' ', assessment('health', e.health)),
        lastRun(e.last_run),
        approvalMarker(e),
        sha(e.last_deployed_version),
        el('span', {}, sha(e.desired_version),
          e.desired_version === 'latest' ? el('span', { class: 'muted' }, ' → ', sha(e.desired_resolved)) : null),
        e.tier, e.branch || 'HEAD',
      ]), 'No environments are configured.'));
    templates.replaceChildren(tmpl.length ? section('Integration templates',
      el('p', { class: 'muted' }, 'Templates are never deployed themselves: each branch gets its own environment made from one.'),
      table('Templates for per-branch environments', ['Template', 'Tier', 'Approval'],
        tmpl.map((e) => [el('span', { 'data-template': e.name }, e.name), e.tier, e.approval ? 'required' : 'no']))) : '');
    runs.replaceChildren(table('The ten newest runs', RUN_HEADERS_ENV, runRows(recent, true), 'No runs yet.'));
  }, err);
}

function runsView() {
  const runs = el('div');
  const err = view('Runs', runs);
  watch(async () => {
    const list = await api('/runs?limit=50');
    runs.replaceChildren(table('The fifty newest runs', RUN_HEADERS_ENV, runRows(list, true), 'No runs yet.'));
  }, err, (ev) => ev.run_id);
}

// Rollback (fast and through the pipeline), promotion and the scheduler, for deployers.
function envActions(env, e, st, sched, others) {
  if (!may(env, 'deployer')) return el('p', { class: 'muted' }, 'Your token may only look at this environment.');
  const enc = encodeURIComponent(env);
  const open = (run) => { location.hash = `#/run/${run.id}`; };
  const parts = [];
  parts.push(actionButton('Roll back now (fast)', { class: 'danger', 'data-action': 'rollback-fast', disabled: !st.warm_version },
    `Switch ${env}'s traffic back to the warm release ${short(st.warm_version)} now?`,
    async () => {
      try {
        open(await write(`/environments/${enc}/rollback`, { fast: true }));
      } catch (e) {
        // Refused because a migration ran since the warm release served: say so, and let a
        // person who knows the schema still fits go ahead (audited as forced).
        if (!/ran an install step/.test(e.message)) throw e;
        if (!confirmed(`${e.message}\n\nSwitch back to the warm release anyway (force)?`)) throw e;
        open(await write(`/environments/${enc}/rollback`, { fast: true, force: true }));
      }
    }));
  parts.push(actionButton('Roll back through the pipeline', { class: 'danger', 'data-action': 'rollback' },
    `Roll ${env} back to the version deployed before ${short(e.last_deployed_version)}, through the full pipeline?`,
    async () => open(await write(`/environments/${enc}/rollback`, {}))));
  if (others.length && e.last_deployed_version) {
    const target = el('select', { id: 'promote-to', 'aria-label': 'Promote to' }, ...others.map((o) => el('option', { value: o }, o)));
    const withFlags = el('input', { id: 'promote-flags', type: 'checkbox' });
    parts.push(el('span', { class: 'action' }, el('label', { for: 'promote-to' }, `Promote ${short(e.last_deployed_version)} to`), target,
      el('label', { for: 'promote-flags' }, withFlags, ' with its feature flags'),
      actionButton('Promote', { 'data-action': 'promote' }, null, async () => {
        const flags = withFlags.checked;
        if (!confirmed(`Release ${short(e.last_deployed_version)} (deployed in ${env}) to ${target.value}${
          flags ? `, and copy every feature flag of ${env} onto ${target.value}` : ''}?`)) return;
        open(await write('/promotions', { from: env, to: target.value, flags }));
      })));
  }
  if (sched) {
    parts.push(sched.suspended
      ? actionButton('Resume the scheduler', { 'data-action': 'resume' }, null,
        async () => write(`/environments/${enc}/scheduler/resume`, {}))
      : actionButton('Suspend the scheduler', { 'data-action': 'suspend' },
        `Suspend ${env}'s scheduler? No job starts until it is resumed.`,
        async () => write(`/environments/${enc}/scheduler/suspend`, {})));
  }
  return el('div', { class: 'actions' }, ...parts);
}

// An environment's feature flags: on/off, who changed each last and when, and a toggle
// (confirmed on a production tier). The toggle is offered to every signed-in token: the API
// decides (deployer), and its refusal is shown beside the button.
function flagsTable(env, e, flags) {
  if (flags === null) return el('p', { class: 'muted' }, 'The flags cannot be read with this token.');
  const enc = encodeURIComponent(env);
  const deployer = may(env, 'deployer');
  return table('Read by running instances from $CUTOVER_FLAGS_FILE and the Cutover-Flags request header; a change needs no restart',
    ['Flag', 'Value', 'Changed by', 'Changed', ''],
    flags.map((f) => {
      const next = f.value === 'on' ? 'off' : 'on';
      const question = e.tier === 'prod'
        ? `Turn the flag ${f.name} ${next} in ${env} (production)? Running instances see it at once.` : null;
      return [el('code', {}, f.name),
        el('span', { class: `badge f-${f.value}`, 'data-flag-value': f.name }, f.value),
        f.updated_by, ago(f.updated_at_ms),
        actionButton(`Turn ${next}`, {
          'data-action': 'flag', 'data-flag': f.name,
          title: deployer ? null : 'Needs the deployer role on this environment',
        }, question, async () => {
          await write(`/environments/${enc}/flags/${encodeURIComponent(f.name)}`, { value: next }, 'PUT');
        })];
    }), `No flags in ${env} yet; \`cutover flag set ${env} NAME on\` adds one.`);
}

function envView(env) {
  const summary = el('div');
  const services = el('div');
  const runs = el('div');
  const history = el('div');
  const releaseBox = el('div');
  const actions = el('div');
  const buttons = el('div');
  const flagsBox = el('div', { id: 'flags' });
  const err = view(`Environment ${env}`, summary, section('Actions', actions), section('Release', releaseBox),
    section('Services', services), section('Feature flags', flagsBox), section('Recent runs', runs),
    section('History of desired_version', history));
  const enc = encodeURIComponent(env);
  watch(async () => {
    if (!appName) appName = (await api('/health')).app;
    const [e, st, rs, hist, sched, all, flags] = await Promise.all([
      api(`/environments/${enc}`), api(`/environments/${enc}/status`),
      api(`/runs?env=${enc}&limit=10`),
      // Never set yet (a new environment): no history rather than an error.
      api(`/history/${encodeURIComponent(`${appName}-${env}`)}/desired_version`).catch((e) => {
        if (e instanceof Unauthorized) throw e;
        return [];
      }),
      api(`/environments/${enc}/scheduler`).catch((e) => {
        if (e instanceof Unauthorized) throw e;
        return null;
      }),
      api('/environments'),
      api(`/environments/${enc}/flags`).catch((e) => {
        if (e instanceof Unauthorized) throw e;
        return null;
      }),
    ]);
    const others = all.filter((o) => o.name !== env && o.kind !== 'integration-template').map((o) => o.name);
    actions.replaceChildren(el('p', { class: 'glance' }, assessment('sync', e.sync), ' ', e.sync.reason, el('br'),
      assessment('health', e.health), ' ', e.health.reason),
    (e.awaiting_approval || []).length ? el('p', {}, approvalMarker(e)) : '',
    el('p', {}, 'Last run: ', lastRun(e.last_run)),
    sched ? el('p', { 'data-scheduler': sched.suspended ? 'suspended' : 'active' },
      `Scheduler: ${sched.suspended ? `suspended${sched.reason ? ` (${sched.reason})` : ''}` : 'active'}`) : '',
    buttons);
    keep(buttons, JSON.stringify([st.warm_version, e.last_deployed_version, sched && sched.suspended, others, roleOn(env)]),
      () => envActions(env, e, st, sched, others));
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
    // Redrawn only when a flag changed: a refusal shown beside a toggle stays readable.
    keep(flagsBox, JSON.stringify([flags && flags.map((f) => [f.name, f.version]), roleOn(env), e.tier]),
      () => flagsTable(env, e, flags));
    runs.replaceChildren(table(`The ten newest runs of ${env}`, RUN_HEADERS, runRows(rs, false), 'No runs yet.'));
    history.replaceChildren(table('Every value it had, newest first', ['Version', 'Value', 'Set by', 'At'],
      hist.map((p) => [String(p.version), sha(p.value), p.actor, time(p.at_ms)]), 'Never set.'));
  }, err, (ev) => ev.env === env);
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
  watch(tick, err);
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

// What the signed-in person may do about a run waiting for an approval: never decide
// their own request (four-eyes; the API refuses it too), and only as an approver.
function decisionFor(run) {
  if (!me) return null;
  if (run.requested_by === me.name) {
    return el('p', { class: 'decision-note', 'data-decision': 'own' },
      'You requested this run: another approver decides it (four-eyes).');
  }
  if (!may(run.env, 'approver')) {
    return el('p', { class: 'decision-note', 'data-decision': 'role' },
      'Waiting for an approver; your token cannot approve here.');
  }
  return null;
}

function runView(id) {
  const facts = el('div');
  const stages = el('ol', { class: 'stages', 'aria-label': 'Pipeline stages' });
  const approvals = el('div');
  const decision = el('div');
  const actions = el('div', { class: 'actions' });
  const log = el('pre', { class: 'log', tabindex: 0, 'aria-label': 'Run log', 'aria-live': 'off' });
  const err = view(`Run #${id}`, facts, actions, decision, section('Pipeline', stages),
    section('Log', log), section('Approvals', approvals));
  const gen = generation;
  let after = 0;
  let following = false;
  let form = null;
  const addLine = (l) => {
    if (l.seq <= after) return;
    const stuck = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
    log.append(`[${l.stage}] ${l.line}\n`);
    after = l.seq;
    if (stuck) log.scrollTop = log.scrollHeight;
  };
  const tick = async () => {
    const run = await api(`/runs/${id}`);
    facts.replaceChildren(el('dl', { class: 'facts run-facts' },
      el('dt', {}, 'Environment'), el('dd', {}, el('a', { href: `#/env/${encodeURIComponent(run.env)}` }, run.env)),
      el('dt', {}, 'State'), el('dd', {}, badge(run.state)),
      el('dt', {}, 'Kind'), el('dd', {}, run.kind.replace(/_/g, ' ')),
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
    const active = !TERMINAL.includes(run.state) && run.state !== 'rejected';
    keep(actions, String(active && may(run.env, 'deployer')), () => (active && may(run.env, 'deployer')
      ? actionButton('Cancel this run', { class: 'danger', 'data-action': 'cancel' },
        `Cancel run #${id} on ${run.env}? A running deploy puts the serving version back.`,
        async () => { await write(`/runs/${id}/cancel`, {}); tick(); })
      : ''));
    if (run.state === 'awaiting_approval') {
      const note = decisionFor(run);
      if (note) { form = null; decision.replaceChildren(note); }
      else if (!form) { form = decisionForm(run, () => tick()); decision.replaceChildren(form); }
    } else {
      form = null;
      decision.replaceChildren();
    }
    // The log: streamed while the event stream is up, else read here.
    if (!following && live.state === 'sse' && active) {
      following = true;
      followLog(id, after, addLine, gen).then(() => { following = false; tick().catch(() => {}); });
    } else if (!following) {
      const lines = await api(`/runs/${id}/logs?after=${after}`);
      lines.forEach(addLine);
      // A finished run changes no more once its last lines are read.
      if (!active && !lines.length) return false;
    }
    return true;
  };
  watch(tick, err, (ev) => ev.run_id === id);
}

function auditView() {
  const list = el('div');
  const err = view('Audit log', list);
  watch(async () => {
    const entries = await api('/audit?limit=100');
    list.replaceChildren(table('The hundred newest changes, newest first', ['#', 'At', 'Actor', 'Action', 'Target', 'Detail'],
      entries.map((a) => [String(a.id), time(a.at_ms), a.actor, a.action, a.target,
        el('code', { class: 'detail' }, JSON.stringify(a.detail))]), 'Nothing recorded yet.'));
  }, err);
}

// API tokens (admins): every token, live and revoked; make one (its secret is shown
// once); revoke one. A token without admin everywhere sees the API's refusal.
function grantsText(g) {
  const parts = Object.entries(g.envs || {}).map(([e, r]) => `${r} on ${e}`);
  if (g.default) parts.unshift(`${g.default} everywhere`);
  return parts.join(', ') || 'none';
}

function tokensView() {
  const list = el('div');
  const made = el('div', { role: 'status' });
  const name = el('input', { id: 'token-name', maxlength: 64, required: true, placeholder: 'ci-deployer' });
  const role = el('select', { id: 'token-role' }, ...ROLES.map((r) => el('option', { value: r }, r)));
  const env = el('input', { id: 'token-env', maxlength: 64, placeholder: 'every environment' });
  const days = el('input', { id: 'token-days', type: 'number', min: 1, max: 3650, placeholder: 'never' });
  const msg = el('p', { role: 'alert', class: 'error' });
  const form = el('form', { class: 'release' },
    el('label', { for: 'token-name' }, 'Name'), name,
    el('label', { for: 'token-role' }, 'Role'), role,
    el('label', { for: 'token-env' }, 'on environment'), env,
    el('label', { for: 'token-days' }, 'expires in days'), days,
    el('button', { type: 'submit' }, 'Create token'), msg);
  const err = view('API tokens', section('New token', form, made), section('Tokens', list));
  const tick = async () => {
    const tokens = await api('/tokens');
    const now = Date.now();
    list.replaceChildren(table('Every token, newest first (secrets are never shown again)',
      ['Name', 'Grants', 'Created', 'Expires', 'State', ''],
      tokens.slice().reverse().map((t) => {
        const liveNow = !t.revoked_at_ms && !(t.expires_at_ms && t.expires_at_ms <= now);
        return [t.name, grantsText(t.grants), el('span', {}, ago(t.created_at_ms), ` by ${t.created_by}`),
          t.expires_at_ms ? time(t.expires_at_ms) : 'never',
          t.revoked_at_ms ? `revoked by ${t.revoked_by}` : liveNow ? 'live' : 'expired',
          liveNow ? actionButton('Revoke', { class: 'danger', 'data-action': 'revoke', 'data-token': t.name },
            `Revoke the token ${t.name}? Everything using it stops working at once.`,
            async () => { await write(`/tokens/${encodeURIComponent(t.name)}/revoke`, {}); tick(); }) : ''];
      }), 'No tokens.'));
  };
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    msg.replaceChildren();
    made.replaceChildren();
    const grants = env.value.trim() ? { envs: { [env.value.trim()]: role.value } } : { default: role.value };
    const body = { name: name.value.trim(), grants };
    if (days.value) body.expires_in_secs = Number(days.value) * 86400;
    try {
      const issued = await write('/tokens', body);
      made.replaceChildren(el('p', {}, `Token ${issued.token.name} made. Its secret, shown only now: `,
        el('code', { class: 'secret' }, issued.secret)));
      name.value = '';
      tick();
    } catch (e) {
      msg.textContent = e.message;
    }
  });
  watch(tick, err, () => false);
}

// ---- routing and signing in -------------------------------------------------

function route() {
  generation += 1;
  for (const ctl of live.follows) ctl.abort(); // the log stream of the view left
  live.follows.clear();
  const hash = decodeURIComponent(location.hash.replace(/^#\/?/, ''));
  const [what, arg] = [hash.split('/')[0], hash.split('/').slice(1).join('/')];
  if (what === 'env' && arg) envView(arg);
  else if (what === 'run' && /^\d+$/.test(arg)) runView(Number(arg));
  else if (what === 'runs') runsView();
  else if (what === 'audit') auditView();
  else if (what === 'scale') scaleView();
  else if (what === 'tokens') tokensView();
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
  me = null;
  disconnectEvents();
  document.getElementById('signin-form').hidden = false;
  document.getElementById('signed-in').hidden = true;
  document.getElementById('signin-notice').hidden = false;
  document.getElementById('nav-tokens').hidden = true;
  document.getElementById('signin-status').textContent = message ? 'Not signed in.' : '';
}

// Who the token is; resolves true when signed in.
async function showWho() {
  if (!token()) { showSignedOut(''); return false; }
  try {
    me = await api('/whoami');
  } catch (_) {
    return false; // api() showed the form
  }
  document.getElementById('signin-form').hidden = true;
  document.getElementById('signed-in').hidden = false;
  document.getElementById('signin-notice').hidden = true;
  document.getElementById('nav-tokens').hidden = !isAdmin();
  document.getElementById('who').textContent = me.name;
  connectEvents();
  return true;
}

function setupSignIn() {
  const input = document.getElementById('token');
  document.getElementById('signin-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, input.value.trim());
    input.value = '';
    await showWho();
    route(); // the view the address names: a deep link works after one sign-in
  });
  document.getElementById('signout').addEventListener('click', () => {
    sessionStorage.removeItem(TOKEN_KEY);
    showSignedOut('');
    route();
  });
}

takeTokenFromUrl();
setupSignIn();
window.addEventListener('hashchange', route);
// The views need to know who is signed in (which buttons to offer) before they draw.
showWho().finally(route);
api('/health').then((h) => {
  appName = h.app;
  document.getElementById('footer').textContent = `${h.app} · Cutover ${h.cutover_version}`;
}).catch(() => {});
