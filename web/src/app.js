// corral's portal: a small Preact app (htm templates, no JSX build step)
// over the public /v1 API. Pages are hash routes; data comes from one
// store refreshed by the event stream (at most every 2 s) and every 15 s.
import { render } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { ApiError, call, events, get, token, whenLoggedOut } from './api.js';
import { Groups, Images, Networks, Projects, Tokens } from './admin.js';
import { Err, html, may } from './util.js';
import { Console } from './console.js';
import { Display } from './display.js';
import { CreateVM } from './create.js';
import { Charts } from './charts.js';
import './style.css';

// ---- the store: status, hosts, VMs, recent events -------------------------

const store = {
  status: null,
  hosts: [],
  vms: [],
  events: [],
  live: false,
  error: '',
  listeners: new Set(),
};

function notify() {
  for (const fn of store.listeners) fn({});
}

let refreshing = null;
let lastRefresh = 0;
export async function refresh() {
  if (refreshing) return refreshing;
  refreshing = (async () => {
    try {
      const [status, hosts, vms] = await Promise.all([get('/v1/status'), get('/v1/hosts'), get('/v1/vms')]);
      Object.assign(store, { status, hosts, vms, error: '' });
    } catch (e) {
      store.error = e.message;
    }
    lastRefresh = Date.now();
    refreshing = null;
    notify();
  })();
  return refreshing;
}

// refreshSoon refreshes at most every 2 s, however many events arrive.
let soon = null;
function refreshSoon() {
  if (soon) return;
  soon = setTimeout(() => {
    soon = null;
    refresh();
  }, Math.max(0, 2000 - (Date.now() - lastRefresh)));
}

function useStore() {
  const [, set] = useState({});
  useEffect(() => {
    store.listeners.add(set);
    return () => store.listeners.delete(set);
  }, []);
  return store;
}

// ---- small pieces -----------------------------------------------------------

const fmtMiB = (m) => (m >= 1024 ? `${(m / 1024).toFixed(m % 1024 ? 1 : 0)} GiB` : `${m} MiB`);
const ago = (t) => {
  if (!t) return '-';
  const s = Math.max(0, (Date.now() - new Date(t).getTime()) / 1000);
  if (s < 90) return `${Math.round(s)}s`;
  if (s < 5400) return `${Math.round(s / 60)}m`;
  if (s < 172800) return `${Math.round(s / 3600)}h`;
  return `${Math.round(s / 86400)}d`;
};
const State = ({ s }) => html`<span class=${'state s-' + s}>${s}</span>`;

// act runs an action with a confirmation, and shows its error.
function useAction() {
  const [busy, setBusy] = useState('');
  const [err, setErr] = useState('');
  const run = async (label, ask, fn) => {
    if (ask && !confirm(ask)) return;
    setBusy(label);
    setErr('');
    try {
      await fn();
      await refresh();
    } catch (e) {
      setErr(e.message);
    }
    setBusy('');
  };
  return { busy, err, run };
}

// ---- pages ---------------------------------------------------------------

function Login({ why, onIn }) {
  const [t, setT] = useState('');
  const [err, setErr] = useState(why || '');
  const submit = async (e) => {
    e.preventDefault();
    token.set(t.trim());
    try {
      onIn(await get('/v1/whoami'));
    } catch (e2) {
      token.clear();
      setErr(e2 instanceof ApiError && e2.status === 401 ? 'That token is not valid here (unknown, revoked or expired).' : e2.message);
    }
  };
  const withCert = async () => {
    token.useCert();
    try {
      onIn(await get('/v1/whoami'));
    } catch (e2) {
      token.clear();
      setErr(e2 instanceof ApiError && e2.status === 401
        ? 'Your browser presented no client certificate, or one that is not a credential here (unknown, revoked or expired).'
        : e2.message);
    }
  };
  return html`<main class="login">
    <h1>corral</h1>
    <form onSubmit=${submit}>
      <label for="token">API token</label>
      <input id="token" type="password" autocomplete="off" value=${t} onInput=${(e) => setT(e.target.value)}
        placeholder="corral_…" autofocus />
      <button type="submit">Log in</button>
      <${Err} e=${err} />
      <p class="hint">Create one with <code>corralctl token create NAME --role operator</code>. It stays in this tab only.</p>
      <button type="button" id="use-cert" onClick=${withCert}>Log in with my client certificate</button>
      <p class="hint">A certificate from <code>corralctl cert create</code>, imported into this browser as PKCS #12 (<code>openssl pkcs12 -export -in CERT -inkey KEY -out me.p12</code>).</p>
    </form>
  </main>`;
}

function Dashboard() {
  const s = useStore();
  const st = s.status;
  const byState = {};
  for (const v of s.vms) byState[v.state] = (byState[v.state] || 0) + 1;
  return html`<section>
    <h2>Cluster</h2>
    <div class="cards">
      <div class="card"><b>Leader</b><span id="leader">${st?.leader || 'none'}</span></div>
      <div class="card"><b>HA</b><span class=${st?.ha_armed ? 'ok' : 'bad'}>${st?.ha_armed ? 'armed' : 'disarmed'}</span></div>
      <div class="card"><b>Hosts</b><span>${s.hosts.length}</span></div>
      <div class="card"><b>VMs</b><span>${s.vms.length}</span></div>
      ${Object.entries(byState).sort().map(([k, n]) => html`<div class="card"><b>${k}</b><span>${n}</span></div>`)}
    </div>
    <h2>Hosts</h2>
    <${HostTable} hosts=${s.hosts} />
    <h2>Events <small class=${s.live ? 'ok' : 'bad'}>${s.live ? 'live' : 'reconnecting'}</small></h2>
    <${EventList} events=${s.events.slice(-15).reverse()} />
  </section>`;
}

function HostTable({ hosts }) {
  return html`<table>
    <thead><tr><th>Host</th><th>Mode</th><th>Health</th><th>Lease</th><th>Raft</th><th>VMs</th><th>vCPU used</th><th>Memory used</th><th>CPU</th></tr></thead>
    <tbody>${hosts.map((x) => html`<tr key=${x.name}>
      <td><a href=${'#/hosts/' + x.name}>${x.name}</a></td>
      <td>${x.mode || '-'}${x.draining ? ' (draining)' : ''}</td>
      <td class=${'h-' + x.health}>${x.health || '-'}</td>
      <td>${x.lease} ${x.lease_age_ms ? `(${x.lease_age_ms} ms)` : ''}</td>
      <td>${x.raft_role}</td>
      <td>${x.vms}</td>
      <td>${x.allocated?.vcpus ?? 0} / ${x.allocatable?.vcpus ?? 0}</td>
      <td>${fmtMiB(x.allocated?.memory_mib ?? 0)} / ${fmtMiB(x.allocatable?.memory_mib ?? 0)}</td>
      <td>${x.cpu_percent}%</td>
    </tr>`)}</tbody>
  </table>`;
}

function EventList({ events: evs }) {
  if (!evs.length) return html`<p class="hint">No events yet.</p>`;
  return html`<ul class="events">${evs.map((e) => html`<li key=${e.seq}>
    <time title=${e.time}>${new Date(e.time).toLocaleTimeString()}</time>
    <span class="kind">${e.kind}</span>${e.vm ? html` <a href=${'#/vms/' + e.vm}>${e.vm}</a>` : ''} ${e.message}
    ${e.actor ? html` <small>(${e.actor})</small>` : ''}
  </li>`)}</ul>`;
}

function VMs({ who }) {
  const s = useStore();
  const [q, setQ] = useState('');
  const [state, setState] = useState('');
  const [creating, setCreating] = useState(false);
  const shown = s.vms.filter((v) => (!state || v.state === state) && (!q || v.name.includes(q) || (v.host || '').includes(q) || (v.group || '').includes(q)));
  const states = [...new Set(s.vms.map((v) => v.state))].sort();
  return html`<section>
    <div class="bar">
      <h2>Virtual machines</h2>
      <input type="search" aria-label="Search VMs" placeholder="Search name, host, group" value=${q} onInput=${(e) => setQ(e.target.value)} />
      <select aria-label="Filter by state" value=${state} onChange=${(e) => setState(e.target.value)}>
        <option value="">every state</option>
        ${states.map((x) => html`<option value=${x}>${x}</option>`)}
      </select>
      ${may(who, 'operator') && html`<button id="create-vm" onClick=${() => setCreating(true)}>Create VM</button>`}
    </div>
    ${creating && html`<${CreateVM} onDone=${(name) => { setCreating(false); if (name) location.hash = '#/vms/' + name; }} />`}
    <table>
      <thead><tr><th>Name</th><th>Project</th><th>Host</th><th>State</th><th>Up</th><th>Size</th><th>Message</th></tr></thead>
      <tbody>${shown.map((v) => html`<tr key=${v.name}>
        <td><a href=${'#/vms/' + v.name}>${v.name}</a></td><td>${v.project}</td><td>${v.host || '-'}</td>
        <td><${State} s=${v.state} />${v.health ? html` <small>${v.health}</small>` : ''}</td>
        <td>${v.state === 'running' ? ago(v.since) : '-'}</td>
        <td>${v.spec.vcpus} vCPU, ${fmtMiB(v.spec.memory_mib)}</td><td class="msg">${v.failed || v.message || ''}</td>
      </tr>`)}</tbody>
    </table>
    ${!shown.length && html`<p class="hint">No VMs${q || state ? ' match' : ''}.</p>`}
  </section>`;
}

function VMDetail({ name, who }) {
  const s = useStore();
  const v = s.vms.find((x) => x.name === name);
  const act = useAction();
  const [showConsole, setShowConsole] = useState(false);
  const [showDisplay, setShowDisplay] = useState(false);
  if (!v) return html`<section><h2>${name}</h2><p class="hint">${s.vms.length ? 'No such VM (deleted?).' : 'Loading…'}</p><a href="#/vms">All VMs</a></section>`;
  const op = may(who, 'operator');
  const running = v.state === 'running';
  const evs = s.events.filter((e) => e.vm === name).slice(-10).reverse();
  return html`<section>
    <div class="bar"><h2>${v.name}</h2> <${State} s=${v.state} /></div>
    <dl class="facts">
      <dt>Host</dt><dd>${v.host || '-'}${v.migrating_to ? ` → ${v.migrating_to}` : ''}</dd>
      <dt>Project</dt><dd>${v.project}</dd>
      <dt>Size</dt><dd>${v.spec.vcpus} vCPU, ${fmtMiB(v.spec.memory_mib)}</dd>
      <dt>Up</dt><dd>${running ? ago(v.since) : '-'}</dd>
      ${v.health && html`<dt>Health</dt><dd>${v.health}${v.health_detail ? ': ' + v.health_detail : ''}</dd>`}
      ${v.group && html`<dt>Group</dt><dd><a href=${'#/groups/' + v.group}>${v.group}</a></dd>`}
      <dt>HA</dt><dd>${v.spec.ha.enabled ? `on, priority ${v.spec.ha.priority}` : 'off'}; ${v.restarts || 0} restarts, ${v.relocations || 0} relocations</dd>
      ${(v.message || v.failed) && html`<dt>Message</dt><dd>${v.failed || v.message}</dd>`}
    </dl>
    ${op && html`<div class="actions">
      <button disabled=${!!act.busy || running} onClick=${() => act.run('start', '', () => call('POST', `/v1/vms/${name}/start`))}>Start</button>
      <button disabled=${!!act.busy || !running} onClick=${() => act.run('stop', `Stop ${name}? Its guest is shut down.`, () => call('POST', `/v1/vms/${name}/stop`))}>Stop</button>
      <button disabled=${!!act.busy || !running} onClick=${() => act.run('restart', `Restart ${name}?`, () => call('POST', `/v1/vms/${name}/restart`))}>Restart</button>
      <button class="danger" disabled=${!!act.busy} onClick=${() => act.run('delete', `Delete ${name}? Its disks are deleted too.`, async () => { await call('DELETE', `/v1/vms/${name}`); location.hash = '#/vms'; })}>Delete</button>
      ${act.busy && html`<span class="hint">${act.busy}…</span>`}
    </div>`}
    <${Err} e=${act.err} />
    ${op && html`<${VMChange} v=${v} hosts=${s.hosts} />`}
    ${running && html`<${Charts} vm=${name} />`}
    ${op && running && html`<h3>Serial console</h3>
      ${showConsole ? html`<${Console} vm=${name} />` : html`<button id="open-console" onClick=${() => setShowConsole(true)}>Open serial console</button>`}
      <h3>Graphical console</h3>
      ${showDisplay ? html`<${Display} vm=${name} />` : html`<button id="open-display" onClick=${() => setShowDisplay(true)}>Open graphical console</button>`}`}
    <h3>Events</h3>
    <${EventList} events=${evs} />
  </section>`;
}

// VMChange resizes a VM (at its next start, or restarting it now) and
// live-migrates a running one, to a chosen host or where placement says.
function VMChange({ v, hosts }) {
  const [size, setSize] = useState(null);
  const [target, setTarget] = useState('');
  const act = useAction();
  const running = v.state === 'running';
  const resize = (e) => {
    e.preventDefault();
    const body = { vcpus: +size.vcpus, memory_mib: +size.memory_mib, restart: size.restart };
    act.run('resize', `Resize ${v.name} to ${body.vcpus} vCPU, ${fmtMiB(body.memory_mib)}${body.restart ? ', restarting it now' : ' at its next start'}?`, async () => {
      await call('PUT', `/v1/vms/${encodeURIComponent(v.name)}/resize`, body);
      setSize(null);
    });
  };
  const migrate = (e) => {
    e.preventDefault();
    act.run('migrate', `Live-migrate ${v.name} to ${target || 'where placement says'}?`, () =>
      call('POST', `/v1/vms/${encodeURIComponent(v.name)}/migrate`, target ? { target } : {}));
  };
  const targets = hosts.filter((h) => h.name !== v.host && h.mode === 'active');
  return html`<div class="change">
    ${size ? html`<form class="inline" id="resize-form" onSubmit=${resize} aria-label="Resize">
      <label>vCPUs <input id="resize-vcpus" type="number" min="1" max="512" required value=${size.vcpus} onInput=${(e) => setSize({ ...size, vcpus: e.target.value })} /></label>
      <label>Memory (MiB) <input id="resize-memory" type="number" min="16" required value=${size.memory_mib} onInput=${(e) => setSize({ ...size, memory_mib: e.target.value })} /></label>
      <label><input type="checkbox" checked=${size.restart} disabled=${!running} onChange=${(e) => setSize({ ...size, restart: e.target.checked })} /> restart now</label>
      <button type="submit" disabled=${!!act.busy}>Resize</button> <button type="button" onClick=${() => setSize(null)}>Cancel</button>
    </form>` : html`<button type="button" id="open-resize" onClick=${() => setSize({ vcpus: v.spec.vcpus, memory_mib: v.spec.memory_mib, restart: false })}>Resize…</button>`}
    ${running && html`<form class="inline" onSubmit=${migrate} aria-label="Migrate">
      <label for="migrate-target">Live-migrate to</label>
      <select id="migrate-target" value=${target} onChange=${(e) => setTarget(e.target.value)}>
        <option value="">where placement says</option>
        ${targets.map((h) => html`<option key=${h.name} value=${h.name}>${h.name}</option>`)}
      </select>
      <button type="submit" disabled=${!!act.busy || !!v.migrating_to}>Migrate</button>
      ${v.migrating_to && html`<span class="hint">migrating ${v.message || 'to ' + v.migrating_to}</span>`}
    </form>`}
    ${act.busy && html`<span class="hint">${act.busy}…</span>`}
    <${Err} e=${act.err} />
  </div>`;
}

function HostDetail({ name, who }) {
  const s = useStore();
  const x = s.hosts.find((hh) => hh.name === name);
  const act = useAction();
  if (!x) return html`<section><h2>${name}</h2><p class="hint">Loading…</p></section>`;
  const vms = s.vms.filter((v) => v.host === name);
  // A drain's progress, VM by VM: those still here (migrating or waiting)
  // and those it moved, running on their new host.
  const moved = s.vms.filter((v) => v.home === name && v.host !== name);
  const done = moved.filter((v) => v.state === 'running').length;
  const total = vms.length + moved.length;
  return html`<section>
    <div class="bar"><h2>Host ${x.name}</h2><span class=${'h-' + x.health}>${x.health}</span></div>
    <dl class="facts">
      <dt>Mode</dt><dd>${x.mode}${x.draining ? ' (draining)' : ''}</dd>
      <dt>Lease</dt><dd>${x.lease} (${x.lease_age_ms} ms)</dd>
      <dt>Version</dt><dd>${x.version} (protocol ${x.protocol})</dd>
      <dt>Capacity</dt><dd>${x.capacity.vcpus} vCPU, ${fmtMiB(x.capacity.memory_mib)}</dd>
      ${x.health_reasons?.length ? html`<dt>Health reasons</dt><dd>${x.health_reasons.join('; ')}</dd>` : ''}
      ${x.labels && html`<dt>Labels</dt><dd>${Object.entries(x.labels).map(([k, v]) => `${k}=${v}`).join(', ')}</dd>`}
    </dl>
    ${may(who, 'admin') && html`<${HostLabels} name=${name} />`}
    ${may(who, 'admin') && html`<div class="actions">
      <button disabled=${!!act.busy || x.mode !== 'active'} onClick=${() => act.run('drain', `Drain ${name}? Its VMs live-migrate away and it enters maintenance.`, () => call('POST', `/v1/hosts/${name}/drain`))}>Drain</button>
      <button disabled=${!!act.busy || x.mode !== 'maintenance'} onClick=${() => act.run('restore', `Return ${name} to service and move its VMs back?`, () => call('POST', `/v1/hosts/${name}/restore`, { failback: true }))}>Restore with failback</button>
    </div>`}
    <${Err} e=${act.err} />
    ${(x.draining || moved.length > 0) && html`<h3>Drain</h3>
      <p id="drain-progress">${x.draining ? 'draining: ' : ''}${done} of ${total} VMs moved and running elsewhere${!x.draining && vms.length ? `; ${vms.length} could not be moved` : ''}</p>
      <progress max=${total || 1} value=${done} aria-label="VMs moved off ${name}"></progress>`}
    <h3>VMs on ${name}</h3>
    <table><thead><tr><th>VM</th><th>State</th><th>Migration</th></tr></thead>
    <tbody>${vms.map((v) => html`<tr key=${v.name}><td><a href=${'#/vms/' + v.name}>${v.name}</a></td><td><${State} s=${v.state} /></td>
      <td class="msg">${v.migrating_to ? (v.message ? 'migrating ' + v.message : '→ ' + v.migrating_to) : x.draining ? 'waiting' : ''}</td></tr>`)}</tbody></table>
    ${moved.length > 0 && html`<h3>Moved off ${name}</h3>
      <table><thead><tr><th>VM</th><th>Now on</th><th>State</th></tr></thead>
      <tbody>${moved.map((v) => html`<tr key=${v.name}><td><a href=${'#/vms/' + v.name}>${v.name}</a></td><td>${v.host}</td><td><${State} s=${v.state} /></td></tr>`)}</tbody></table>
      <p class="hint">Restore with failback moves them back.</p>`}
  </section>`;
}

function Hosts() {
  const s = useStore();
  return html`<section><h2>Hosts</h2><${HostTable} hosts=${s.hosts} /></section>`;
}

// HostLabels edits a host's labels (admins): key=value sets, key- removes.
function HostLabels({ name }) {
  const [text, setText] = useState('');
  const act = useAction();
  const submit = (e) => {
    e.preventDefault();
    const req = { set: {}, remove: [] };
    for (const w of text.split(/[\s,]+/).filter(Boolean)) {
      if (w.endsWith('-')) req.remove.push(w.slice(0, -1));
      else {
        const [k, ...v] = w.split('=');
        req.set[k] = v.join('=');
      }
    }
    act.run('labels', '', async () => {
      await call('PUT', `/v1/hosts/${name}/labels`, req);
      setText('');
    });
  };
  return html`<form class="inline" onSubmit=${submit} aria-label="Edit labels">
    <label for="host-labels">Labels</label>
    <input id="host-labels" placeholder="rack=r1 ssd=yes old-" value=${text} onInput=${(e) => setText(e.target.value)} />
    <button type="submit" disabled=${!!act.busy}>Apply</button><${Err} e=${act.err} /></form>`;
}

function Events() {
  const s = useStore();
  return html`<section><h2>Events</h2><${EventList} events=${s.events.slice().reverse()} /></section>`;
}

function Nav({ who, route, onOut }) {
  const link = (href, label) => html`<a href=${href} aria-current=${route === href ? 'page' : undefined}>${label}</a>`;
  return html`<nav>
    <strong>corral</strong>
    ${link('#/', 'Dashboard')} ${link('#/hosts', 'Hosts')} ${link('#/vms', 'VMs')} ${link('#/groups', 'Groups')} ${link('#/networks', 'Networks')} ${link('#/images', 'Images')}
    ${link('#/projects', 'Projects')} ${may(who, 'admin') && link('#/tokens', 'Tokens')} ${link('#/events', 'Events')}
    <span class="who">${who.actor} · ${who.role}${who.project ? ' · project ' + who.project : ''}</span>
    <button class="link" onClick=${onOut}>Log out</button>
  </nav>`;
}

function App() {
  const [who, setWho] = useState(null);
  const [why, setWhy] = useState('');
  const [route, setRoute] = useState(location.hash || '#/');
  const [checked, setChecked] = useState(false);
  const s = useStore();
  useEffect(() => {
    const on = () => setRoute(location.hash || '#/');
    addEventListener('hashchange', on);
    whenLoggedOut((msg) => {
      token.clear();
      setWho(null);
      setWhy('Your session ended: ' + (msg || 'the token is no longer valid') + '. Log in again.');
    });
    if (token.active()) {
      get('/v1/whoami').then(setWho, () => token.clear()).finally(() => setChecked(true));
    } else setChecked(true);
    return () => removeEventListener('hashchange', on);
  }, []);
  useEffect(() => {
    if (!who) return undefined;
    refresh();
    const stop = events((e) => {
      store.events = [...store.events.slice(-199), e];
      refreshSoon();
    }, (live) => {
      store.live = live;
      notify();
    });
    const t = setInterval(refresh, 15000);
    return () => {
      stop();
      clearInterval(t);
    };
  }, [who]);
  if (!checked) return html`<p class="boot">Loading corral…</p>`;
  if (!who) return html`<${Login} why=${why} onIn=${(w) => { setWhy(''); setWho(w); }} />`;
  const out = () => {
    token.clear();
    setWho(null);
  };
  let page;
  const [, top, arg] = route.split('/');
  if (top === 'vms' && arg) page = html`<${VMDetail} name=${decodeURIComponent(arg)} who=${who} />`;
  else if (top === 'vms') page = html`<${VMs} who=${who} />`;
  else if (top === 'hosts' && arg) page = html`<${HostDetail} name=${decodeURIComponent(arg)} who=${who} />`;
  else if (top === 'hosts') page = html`<${Hosts} />`;
  else if (top === 'events') page = html`<${Events} />`;
  else if (top === 'groups') page = html`<${Groups} who=${who} name=${arg ? decodeURIComponent(arg) : ''} key=${arg || ''} />`;
  else if (top === 'networks') page = html`<${Networks} who=${who} />`;
  else if (top === 'images') page = html`<${Images} who=${who} />`;
  else if (top === 'projects') page = html`<${Projects} who=${who} />`;
  else if (top === 'tokens' && may(who, 'admin')) page = html`<${Tokens} />`;
  else page = html`<${Dashboard} />`;
  return html`<${Nav} who=${who} route=${'#/' + (top || '')} onOut=${out} />
    <${Err} e=${s.error} />
    <main>${page}</main>`;
}

render(html`<${App} />`, document.getElementById('app'));
