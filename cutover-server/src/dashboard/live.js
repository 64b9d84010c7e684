// Cutover dashboard, live updates: the server's event stream (GET /api/v1/events,
// server-sent events) read with fetch() so the token travels in the Authorization
// header (EventSource cannot send one, and a token in the URL lands in logs).
// An event only says what changed; the view that shows it re-reads it through the API.
// While the stream is down the views poll every POLL_MS and the stream is retried with
// backoff (1 s, 2 s, 4 s ... 30 s); body[data-live] says which ("sse" or "polling"), and
// body[data-polls] counts the fallback polls made. A hidden tab closes its streams and
// neither polls nor streams ("paused"): the server answers HTTP/1.1, and a browser keeps
// only six connections per server, so open streams in background tabs would starve the
// foreground one. Showing the tab again reconnects and re-reads.
'use strict';

const POLL_MS = 5000;
const live = { state: 'off', retry: 0, controller: null, listeners: new Set(), polls: 0, follows: new Set() };

function setLive(state) {
  live.state = state;
  document.body.dataset.live = state;
  const tag = document.getElementById('live');
  if (tag) {
    tag.textContent = state === 'sse' ? '● live' : state === 'polling' ? '○ polling' : state === 'paused' ? '○ paused' : '';
    tag.title = state === 'sse' ? 'Updates arrive as they happen (event stream)'
      : `The event stream is down: refreshing every ${POLL_MS / 1000} s while it reconnects`;
  }
}

function notify(event) {
  for (const fn of [...live.listeners]) fn(event);
}

// One SSE frame: "event: kind\ndata: {...}" (comments start with ':').
function handleFrame(frame) {
  let type = 'message';
  let data = '';
  for (const line of frame.split('\n')) {
    if (!line || line.startsWith(':')) continue;
    const at = line.indexOf(':');
    const key = at < 0 ? line : line.slice(0, at);
    const value = at < 0 ? '' : line.slice(at + 1).replace(/^ /, '');
    if (key === 'event') type = value;
    else if (key === 'data') data += value;
  }
  if (type === 'ready') {
    live.retry = 0;
    setLive('sse');
    notify(null); // re-read everything: events may have been missed while down
  } else if (data && type !== 'reset') {
    try { notify(JSON.parse(data)); } catch (_) { /* not an event */ }
  }
}

async function connectEvents() {
  if (live.controller || !token() || document.hidden) return;
  const ctl = new AbortController();
  live.controller = ctl;
  try {
    const res = await fetch(`${API}/events`, {
      headers: { Authorization: `Bearer ${token()}`, Accept: 'text/event-stream' },
      signal: ctl.signal, cache: 'no-store',
    });
    if (!res.ok || !res.body) throw new Error(`${res.status}`);
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += value.replace(/\r\n/g, '\n');
      let end;
      while ((end = buf.indexOf('\n\n')) >= 0) {
        handleFrame(buf.slice(0, end));
        buf = buf.slice(end + 2);
      }
    }
  } catch (_) { /* refused, network error or aborted: below */ }
  if (live.controller === ctl) live.controller = null;
  if (ctl.signal.aborted) return; // signed out or hidden
  setLive('polling');
  const wait = Math.min(30000, 1000 * 2 ** live.retry);
  live.retry += 1;
  setTimeout(connectEvents, wait);
}

function disconnectEvents(state) {
  if (live.controller) live.controller.abort();
  live.controller = null;
  for (const ctl of live.follows) ctl.abort();
  live.follows.clear();
  setLive(state || 'off');
}

document.addEventListener('visibilitychange', () => {
  if (document.hidden) {
    if (live.state !== 'off') disconnectEvents('paused');
  } else if (live.state === 'paused') {
    live.retry = 0;
    connectEvents();
  }
});

// Runs `tick` now, again on every event `relevant` accepts (all when absent), and every
// POLL_MS while the stream is down; until the view changes or `tick` returns false.
function watch(tick, errorBox, relevant) {
  const gen = generation;
  let running = false;
  let again = false;
  let stopped = false;
  const run = async () => {
    if (gen !== generation || stopped) return;
    if (running) { again = true; return; }
    running = true;
    try {
      if ((await tick()) === false) stopped = true;
      errorBox.replaceChildren();
    } catch (e) {
      if (e instanceof Unauthorized) {
        errorBox.replaceChildren(el('p', { class: 'error' },
          `Sign in with an API token (form at the top of the page): ${e.message}`));
        stopped = true;
      } else {
        errorBox.replaceChildren(el('p', { class: 'error' }, `Cannot reach the server: ${e.message}`));
      }
    }
    running = false;
    if (again) { again = false; run(); }
  };
  const listener = (event) => {
    if (gen !== generation) { live.listeners.delete(listener); return; }
    if (!event || !relevant || relevant(event)) run();
  };
  live.listeners.add(listener);
  const fallback = () => {
    if (gen !== generation) return;
    if ((live.state === 'polling' || live.state === 'off') && !stopped) {
      live.polls += 1;
      document.body.dataset.polls = String(live.polls);
      run();
    }
    setTimeout(fallback, POLL_MS);
  };
  run();
  setTimeout(fallback, POLL_MS);
}

// Follows a run's log (NDJSON, GET /runs/ID/logs?follow=true) from after `after`,
// calling `line` for each; resolves true when the run ended, false when the stream broke.
async function followLog(id, after, line, gen) {
  const ctl = new AbortController();
  live.follows.add(ctl);
  try {
    const res = await fetch(`${API}/runs/${id}/logs?follow=true&after=${after}`, {
      headers: { Authorization: `Bearer ${token()}`, Accept: 'application/x-ndjson' }, cache: 'no-store',
      signal: ctl.signal,
    });
    if (!res.ok || !res.body) return false;
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = '';
    for (;;) {
      if (gen !== generation) { reader.cancel(); return true; }
      const { value, done } = await reader.read();
      if (done) return false;
      buf += value;
      let end;
      while ((end = buf.indexOf('\n')) >= 0) {
        const text = buf.slice(0, end);
        buf = buf.slice(end + 1);
        if (!text.trim()) continue;
        const obj = JSON.parse(text);
        if (obj.end) return true;
        line(obj);
      }
    }
  } catch (_) {
    return false;
  } finally {
    live.follows.delete(ctl);
  }
}
