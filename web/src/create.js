// The create form: the fields of corralctl vm create that a portal user
// needs, sent as one POST /v1/vms.
import { useEffect, useState } from 'preact/hooks';
import { call, get } from './api.js';
import { html } from './util.js';


export function CreateVM({ onDone }) {
  const [f, setF] = useState({ name: '', vcpus: 1, memory: 512, boot: 'image', image: '', disk: 0, kernel: '', initrd: '', cmdline: 'console=ttyS0',
    network: '', anti: '', priority: 0, ha: true, labels: '', userData: '' });
  const [images, setImages] = useState([]);
  const [networks, setNetworks] = useState([]);
  const [err, setErr] = useState('');
  const [busy, setBusy] = useState(false);
  useEffect(() => {
    get('/v1/images').then((x) => setImages(x || []), () => {});
    get('/v1/networks').then((x) => setNetworks(x || []), () => {});
  }, []);
  const set = (k) => (e) => setF({ ...f, [k]: e.target.type === 'checkbox' ? e.target.checked : e.target.value });
  const submit = async (e) => {
    e.preventDefault();
    const spec = { vcpus: +f.vcpus, memory_mib: +f.memory, ha: { enabled: f.ha, priority: +f.priority, max_restart: 3, restart_window_s: 600, max_relocate: 2 } };
    if (f.boot === 'image') spec.disks = [{ image: f.image, size_mib: +f.disk || 0 }];
    else {
      spec.kernel = { kernel: f.kernel, initrd: f.initrd, cmdline: f.cmdline };
      if (f.image) spec.disks = [{ image: f.image }];
    }
    if (f.network) spec.nics = [{ network: f.network }];
    if (f.anti) spec.anti_affinity = f.anti;
    if (f.userData) spec.user_data = f.userData;
    const labels = {};
    for (const kv of f.labels.split(',').map((s) => s.trim()).filter(Boolean)) {
      const [k, ...v] = kv.split('=');
      labels[k] = v.join('=');
    }
    if (Object.keys(labels).length) spec.labels = labels;
    setBusy(true);
    setErr('');
    try {
      await call('POST', '/v1/vms', { name: f.name, spec, ha: spec.ha });
      onDone(f.name);
    } catch (e2) {
      setErr(e2.message);
    }
    setBusy(false);
  };
  return html`<form class="create" onSubmit=${submit} aria-label="Create a VM">
    <h3>Create a VM</h3>
    <label>Name <input id="vm-name" required value=${f.name} onInput=${set('name')} pattern="[a-z0-9][a-z0-9-]*" /></label>
    <label>vCPUs <input id="vm-vcpus" type="number" min="1" max="512" value=${f.vcpus} onInput=${set('vcpus')} /></label>
    <label>Memory (MiB) <input id="vm-memory" type="number" min="16" value=${f.memory} onInput=${set('memory')} /></label>
    <fieldset><legend>Boot</legend>
      <label><input type="radio" name="boot" value="image" checked=${f.boot === 'image'} onChange=${set('boot')} /> disk image</label>
      <label><input type="radio" name="boot" value="kernel" checked=${f.boot === 'kernel'} onChange=${set('boot')} /> kernel</label>
    </fieldset>
    <label>Image <select id="vm-image" value=${f.image} onChange=${set('image')}>
      <option value="">${f.boot === 'image' ? 'choose…' : 'none'}</option>
      ${images.map((i) => html`<option value=${i.name}>${i.name}</option>`)}
    </select></label>
    ${f.boot === 'image' ? html`<label>Disk size (MiB, 0: the image's) <input type="number" min="0" value=${f.disk} onInput=${set('disk')} /></label>` : html`
      <label>Kernel <input id="vm-kernel" value=${f.kernel} onInput=${set('kernel')} placeholder="/var/lib/corral/kernels/vmlinuz" /></label>
      <label>Initrd <input id="vm-initrd" value=${f.initrd} onInput=${set('initrd')} /></label>
      <label>Command line <input id="vm-cmdline" value=${f.cmdline} onInput=${set('cmdline')} /></label>`}
    <label>Network <select value=${f.network} onChange=${set('network')}>
      <option value="">none</option>${networks.map((n) => html`<option value=${n.name}>${n.name}</option>`)}
    </select></label>
    <label>Anti-affinity group <input value=${f.anti} onInput=${set('anti')} /></label>
    <label>HA <input type="checkbox" checked=${f.ha} onChange=${set('ha')} /> priority <input type="number" min="-1000" max="1000" value=${f.priority} onInput=${set('priority')} /></label>
    <label>Labels (k=v, …) <input value=${f.labels} onInput=${set('labels')} /></label>
    <label>User data <textarea rows="3" value=${f.userData} onInput=${set('userData')}></textarea></label>
    <div class="actions">
      <button id="vm-create-submit" type="submit" disabled=${busy}>${busy ? 'Creating…' : 'Create'}</button>
      <button type="button" onClick=${() => onDone('')}>Cancel</button>
    </div>
    ${err && html`<p class="error" role="alert">${err}</p>`}
  </form>`;
}
