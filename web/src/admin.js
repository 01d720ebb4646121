// The pages of what VMs are made of and who may do what: networks,
// images (uploaded with progress), projects with their quotas, and API
// tokens (admins only). Each lists what the API returns and offers what
// the user's role may do.
import { useEffect, useState } from 'preact/hooks';
import { call, get } from './api.js';
import { Err, html, may } from './util.js';


// useList loads a list and reloads it after each change.
function useList(path) {
  const [items, setItems] = useState(null);
  const [err, setErr] = useState('');
  const load = () => get(path).then((x) => { setItems(x || []); setErr(''); }, (e) => setErr(e.message));
  useEffect(() => { load(); }, [path]);
  return { items, err, load, setErr };
}

const bytes = (n) => (n >= 1 << 30 ? `${(n / (1 << 30)).toFixed(1)} GiB` : `${(n / (1 << 20)).toFixed(1)} MiB`);

export function Networks({ who }) {
  const l = useList('/v1/networks');
  const [f, setF] = useState({ name: '', kind: 'vxlan', id: '', uplink: '' });
  const create = async (e) => {
    e.preventDefault();
    const req = { name: f.name, kind: f.kind };
    if (f.kind === 'vxlan') req.vni = +f.id;
    else Object.assign(req, { vlan: +f.id, uplink: f.uplink });
    try {
      await call('POST', '/v1/networks', req);
      setF({ ...f, name: '', id: '' });
      l.load();
    } catch (e2) {
      l.setErr(e2.message);
    }
  };
  const del = async (n) => {
    if (!confirm(`Delete network ${n}?`)) return;
    try { await call('DELETE', `/v1/networks/${n}`); l.load(); } catch (e) { l.setErr(e.message); }
  };
  return html`<section><h2>Networks</h2>
    <table><thead><tr><th>Name</th><th>Kind</th><th>ID</th><th>Bridge</th><th>MTU</th><th>Here</th><th></th></tr></thead>
    <tbody>${(l.items || []).map((n) => html`<tr key=${n.name}><td>${n.name}</td><td>${n.kind}</td><td>${n.vni || n.vlan}${n.uplink ? ' on ' + n.uplink : ''}</td>
      <td>${n.bridge}</td><td>${n.mtu || '-'}</td><td>${n.local_ok ? 'ok' : n.local_error || '-'}</td>
      <td>${may(who, 'operator') && html`<button class="danger" onClick=${() => del(n.name)}>Delete</button>`}</td></tr>`)}</tbody></table>
    ${may(who, 'operator') && html`<form class="inline" onSubmit=${create} aria-label="Create a network">
      <input required placeholder="name" value=${f.name} onInput=${(e) => setF({ ...f, name: e.target.value })} />
      <select value=${f.kind} onChange=${(e) => setF({ ...f, kind: e.target.value })}><option value="vxlan">VXLAN</option><option value="vlan">VLAN</option></select>
      <input required type="number" min="1" placeholder=${f.kind === 'vxlan' ? 'VNI' : 'VLAN ID'} value=${f.id} onInput=${(e) => setF({ ...f, id: e.target.value })} />
      ${f.kind === 'vlan' && html`<input required placeholder="uplink" value=${f.uplink} onInput=${(e) => setF({ ...f, uplink: e.target.value })} />`}
      <button type="submit">Create network</button></form>`}
    <${Err} e=${l.err} /></section>`;
}

export function Images({ who }) {
  const l = useList('/v1/images');
  const [name, setName] = useState('');
  const [file, setFile] = useState(null);
  const [progress, setProgress] = useState(null);
  const upload = async (e) => {
    e.preventDefault();
    if (!file) return;
    setProgress(0);
    try {
      await call('PUT', `/v1/images/${encodeURIComponent(name)}`, file, (done, total) => setProgress(done / total));
      setName('');
      l.load();
    } catch (e2) {
      l.setErr(e2.message);
    }
    setProgress(null);
  };
  const del = async (n) => {
    if (!confirm(`Delete image ${n}?`)) return;
    try { await call('DELETE', `/v1/images/${n}`); l.load(); } catch (e) { l.setErr(e.message); }
  };
  return html`<section><h2>Images</h2>
    <table><thead><tr><th>Name</th><th>Project</th><th>Format</th><th>Size</th><th>Virtual size</th><th>SHA-256</th><th></th></tr></thead>
    <tbody>${(l.items || []).map((i) => html`<tr key=${i.name}><td>${i.name}</td><td>${i.project}</td><td>${i.format}</td><td>${bytes(i.size_bytes)}</td>
      <td>${bytes(i.virtual_size_bytes)}</td><td><code title=${i.sha256}>${i.sha256.slice(0, 12)}…</code></td>
      <td>${may(who, 'operator') && html`<button class="danger" onClick=${() => del(i.name)}>Delete</button>`}</td></tr>`)}</tbody></table>
    ${may(who, 'operator') && html`<form class="inline" onSubmit=${upload} aria-label="Upload an image">
      <input required placeholder="name" value=${name} onInput=${(e) => setName(e.target.value)} />
      <input required type="file" aria-label="Image file (qcow2 or raw)" onChange=${(e) => setFile(e.target.files[0])} />
      <button type="submit" disabled=${progress !== null}>Upload</button>
      ${progress !== null && html`<progress max="1" value=${progress}></progress> ${Math.round(progress * 100)}%`}
    </form>`}
    <${Err} e=${l.err} /></section>`;
}

export function Projects({ who }) {
  const l = useList('/v1/projects');
  const [f, setF] = useState({ name: '', vcpus: 0, memory: 0, vms: 0 });
  const create = async (e) => {
    e.preventDefault();
    try {
      await call('POST', '/v1/projects', { name: f.name, quota: { vcpus: +f.vcpus, memory_mib: +f.memory, vms: +f.vms, disk_gib: 0 } });
      setF({ name: '', vcpus: 0, memory: 0, vms: 0 });
      l.load();
    } catch (e2) {
      l.setErr(e2.message);
    }
  };
  const lim = (used, max, unit = '') => `${used}${unit} / ${max ? max + unit : '∞'}`;
  return html`<section><h2>Projects</h2>
    <table><thead><tr><th>Name</th><th>VMs</th><th>vCPUs</th><th>Memory (MiB)</th><th>Disk</th><th>Description</th></tr></thead>
    <tbody>${(l.items || []).map((p) => html`<tr key=${p.name}><td>${p.name}</td><td>${lim(p.usage.vms, p.quota.vms)}</td>
      <td>${lim(p.usage.vcpus, p.quota.vcpus)}</td><td>${lim(p.usage.memory_mib, p.quota.memory_mib)}</td>
      <td>${lim(Math.ceil(p.usage.disk_mib / 1024), p.quota.disk_gib, ' GiB')}</td><td>${p.description || ''}</td></tr>`)}</tbody></table>
    ${may(who, 'admin') && html`<form class="inline" onSubmit=${create} aria-label="Create a project">
      <input required placeholder="name" value=${f.name} onInput=${(e) => setF({ ...f, name: e.target.value })} />
      <label>vCPUs <input type="number" min="0" value=${f.vcpus} onInput=${(e) => setF({ ...f, vcpus: e.target.value })} /></label>
      <label>MiB <input type="number" min="0" value=${f.memory} onInput=${(e) => setF({ ...f, memory: e.target.value })} /></label>
      <label>VMs <input type="number" min="0" value=${f.vms} onInput=${(e) => setF({ ...f, vms: e.target.value })} /></label>
      <button type="submit">Create project</button> <small class="hint">0: no limit</small></form>`}
    <${Err} e=${l.err} /></section>`;
}

export function Tokens() {
  const l = useList('/v1/tokens');
  const [f, setF] = useState({ name: '', role: 'viewer', project: '', expires: '90d' });
  const [secret, setSecret] = useState('');
  const create = async (e) => {
    e.preventDefault();
    try {
      const t = await call('POST', '/v1/tokens', f);
      setSecret(t.token);
      setF({ ...f, name: '' });
      l.load();
    } catch (e2) {
      l.setErr(e2.message);
    }
  };
  const revoke = async (n) => {
    if (!confirm(`Revoke ${n}? Clients using it are refused at once.`)) return;
    try { await call('DELETE', `/v1/tokens/${n}`); l.load(); } catch (e) { l.setErr(e.message); }
  };
  return html`<section><h2>API tokens and certificates</h2>
    <table><thead><tr><th>Name</th><th>Kind</th><th>Role</th><th>Project</th><th>Expires</th><th>Created by</th><th></th></tr></thead>
    <tbody>${(l.items || []).map((t) => html`<tr key=${t.name}><td>${t.name}</td><td>${t.kind || 'token'}</td><td>${t.role}</td><td>${t.project || 'all'}</td>
      <td>${t.expires ? new Date(t.expires).toLocaleString() : 'never'}${t.expired ? ' (expired)' : ''}</td><td>${t.created_by || ''}</td>
      <td><button class="danger" onClick=${() => revoke(t.name)}>Revoke</button></td></tr>`)}</tbody></table>
    <form class="inline" onSubmit=${create} aria-label="Create a token">
      <input required placeholder="name" value=${f.name} onInput=${(e) => setF({ ...f, name: e.target.value })} />
      <select value=${f.role} onChange=${(e) => setF({ ...f, role: e.target.value })}><option>viewer</option><option>operator</option><option>admin</option></select>
      <input placeholder="project (all)" value=${f.project} onInput=${(e) => setF({ ...f, project: e.target.value })} />
      <input placeholder="expires (90d, 12h, empty: never)" value=${f.expires} onInput=${(e) => setF({ ...f, expires: e.target.value })} />
      <button type="submit">Create token</button></form>
    ${secret && html`<p class="secret">New token (shown once; copy it now): <code>${secret}</code> <button onClick=${() => setSecret('')}>Done</button></p>`}
    <${Err} e=${l.err} /></section>`;
}

// Groups: each group's count, members and roll-out; an operator scales
// it. A roll-out's progress is the members on the current template and
// those ready (running, and healthy when the template has a check).
export function Groups({ who, name }) {
  const l = useList(name ? `/v1/groups/${encodeURIComponent(name)}` : '/v1/groups');
  const [count, setCount] = useState('');
  useEffect(() => {
    if (!name) return undefined;
    const t = setInterval(l.load, 2000); // a roll-out moves member by member
    return () => clearInterval(t);
  }, [name]);
  if (!l.items) return html`<section><h2>Groups</h2><${Err} e=${l.err} /><p class="hint">Loading…</p></section>`;
  if (!name) {
    return html`<section><h2>Groups</h2>
      <table><thead><tr><th>Group</th><th>Project</th><th>Count</th><th>Ready</th><th>Template</th><th>Roll-out</th></tr></thead>
      <tbody>${l.items.map((g) => html`<tr key=${g.name}><td><a href=${'#/groups/' + g.name}>${g.name}</a></td><td>${g.project}</td>
        <td>${g.count}</td><td>${g.ready} of ${g.count}</td><td>${g.version} (${g.current} on it)</td><td>${g.paused ? 'paused' : g.current < g.count ? 'rolling out' : '-'}</td></tr>`)}</tbody></table>
      ${!l.items.length && html`<p class="hint">No groups (corralctl group create).</p>`}
      <${Err} e=${l.err} /></section>`;
  }
  const g = l.items;
  const scale = async (e) => {
    e.preventDefault();
    try { await call('PUT', `/v1/groups/${g.name}/count`, { count: +count }); setCount(''); l.load(); } catch (e2) { l.setErr(e2.message); }
  };
  const rollback = async () => {
    if (!confirm(`Roll ${g.name} back to the template before the last change? Its members are replaced ${g.batch} at a time.`)) return;
    try { await call('POST', `/v1/groups/${g.name}/rollback`); l.load(); } catch (e2) { l.setErr(e2.message); }
  };
  return html`<section>
    <div class="bar"><h2>Group ${g.name}</h2></div>
    <dl class="facts">
      <dt>Count</dt><dd id="group-count">${g.members.length} members of ${g.count}, ${g.running} running, ${g.ready} ready</dd>
      <dt>Template</dt><dd>${g.version}: ${g.template.vcpus} vCPU, ${g.template.memory_mib} MiB; ${g.current} of ${g.count} members on it${g.current < g.count && !g.paused ? ', rolling out ' + g.batch + ' at a time' : ''}</dd>
      ${g.paused && html`<dt>Roll-out</dt><dd class="bad">paused: ${g.paused}</dd>`}
      ${g.template.health && html`<dt>Health check</dt><dd>${g.template.health.exec ? 'command ' + g.template.health.exec : 'TCP port ' + g.template.health.tcp_port}</dd>`}
      ${g.autoscale && html`<dt>Autoscale</dt><dd>${g.autoscale.min}..${g.autoscale.max} at ${g.autoscale.target_cpu}% CPU</dd>`}
    </dl>
    <progress max=${g.count || 1} value=${Math.min(g.current, g.ready)} aria-label="members ready on the current template"></progress>
    ${may(who, 'operator') && html`<form class="inline" onSubmit=${scale} aria-label="Scale the group">
      <input type="number" min="0" max="1000" required placeholder="new count" value=${count} onInput=${(e) => setCount(e.target.value)} />
      <button type="submit">Scale</button>
      ${g.can_rollback && html`<button type="button" onClick=${rollback}>Roll back to the previous template</button>`}</form>`}
    ${may(who, 'operator') && html`<${TemplateForm} g=${g} onDone=${l.load} onErr=${l.setErr} />`}
    <${Err} e=${l.err} />
    <table><thead><tr><th>Member</th><th>Host</th><th>State</th><th>Health</th><th>Template</th><th>Message</th></tr></thead>
    <tbody>${g.members.map((m) => html`<tr key=${m.name}><td><a href=${'#/vms/' + m.name}>${m.name}</a></td><td>${m.host || '-'}</td>
      <td>${m.state}</td><td>${m.health || '-'}</td><td>${m.version}</td><td class="msg">${m.message || ''}</td></tr>`)}</tbody></table>
  </section>`;
}

// TemplateForm changes a group's template (PUT /v1/groups/NAME/template):
// the current one with the fields edited here, rolled out batch members
// at a time (the roll-out's progress shows above).
function TemplateForm({ g, onDone, onErr }) {
  const t = g.template;
  const disk0 = (t.disks && t.disks[0]) || {};
  const [f, setF] = useState(null);
  if (!f) {
    return html`<button type="button" id="edit-template" onClick=${() => setF({
      vcpus: t.vcpus, memory_mib: t.memory_mib, image: disk0.image || '', cmdline: t.kernel ? t.kernel.cmdline : '', batch: g.batch || 1,
    })}>Change the template…</button>`;
  }
  const set = (k) => (e) => setF({ ...f, [k]: e.target.value });
  const submit = async (e) => {
    e.preventDefault();
    const spec = { ...t, vcpus: +f.vcpus, memory_mib: +f.memory_mib };
    if (t.disks && t.disks.length && disk0.image !== undefined) spec.disks = [{ ...disk0, image: f.image }, ...t.disks.slice(1)];
    if (t.kernel) spec.kernel = { ...t.kernel, cmdline: f.cmdline };
    if (!confirm(`Roll the new template out to ${g.name}'s ${g.count} members, ${f.batch} at a time?`)) return;
    try {
      await call('PUT', `/v1/groups/${encodeURIComponent(g.name)}/template`, { spec, batch: +f.batch });
      setF(null);
      onDone();
    } catch (e2) { onErr(e2.message); }
  };
  return html`<form class="create" id="template-form" onSubmit=${submit} aria-label="Change the template">
    <label>vCPUs <input type="number" min="1" max="256" required value=${f.vcpus} onInput=${set('vcpus')} /></label>
    <label>Memory (MiB) <input type="number" min="64" required value=${f.memory_mib} onInput=${set('memory_mib')} /></label>
    ${disk0.image !== undefined && html`<label>Image <input required value=${f.image} onInput=${set('image')} /></label>`}
    ${t.kernel && html`<label>Kernel command line <input id="tpl-cmdline" value=${f.cmdline} onInput=${set('cmdline')} /></label>`}
    <label>Members at a time <input type="number" min="1" max=${g.count || 1} required value=${f.batch} onInput=${set('batch')} /></label>
    <div><button type="submit">Roll out</button> <button type="button" onClick=${() => setF(null)}>Cancel</button></div>
  </form>`;
}
