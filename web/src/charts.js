// Live charts of a running VM: its host's counters every 2 s, drawn as
// CPU (the share of its vCPUs it used), disk (bytes read and written a
// second, all disks) and network (bytes in and out a second, all NICs).
import { useEffect, useRef, useState } from 'preact/hooks';
import { get } from './api.js';
import { html } from './util.js';

const points = 60;

const sum = (xs, f) => (xs || []).reduce((a, x) => a + f(x), 0);

export const fmtRate = (b) => (b >= 1 << 20 ? `${(b / (1 << 20)).toFixed(1)} MiB/s` : b >= 1024 ? `${(b / 1024).toFixed(0)} KiB/s` : `${Math.round(b)} B/s`);

export function Charts({ vm }) {
  const cpu = useRef(null);
  const disk = useRef(null);
  const net = useRef(null);
  const [now, setNow] = useState(null);
  useEffect(() => {
    let last = null;
    const series = { cpu: [], disk: [], net: [] };
    let alive = true;
    const tick = async () => {
      try {
        const st = await get(`/v1/vms/${encodeURIComponent(vm)}/stats`);
        const at = performance.now();
        const c = { ns: st.cpu_time_ns, disk: sum(st.disks, (d) => d.read_bytes + d.write_bytes), net: sum(st.nics, (n) => n.rx_bytes + n.tx_bytes), at };
        // Counters start over when the guest restarts or moves: skip that sample.
        if (last && c.ns >= last.ns && c.disk >= last.disk && c.net >= last.net) {
          const dt = (at - last.at) / 1000;
          const x = {
            cpu: Math.max(0, Math.min(100, (100 * (c.ns - last.ns)) / (dt * 1e9 * Math.max(1, st.vcpus)))), // jitter can pass 100
            disk: (c.disk - last.disk) / dt,
            net: (c.net - last.net) / dt,
          };
          for (const k of Object.keys(series)) {
            series[k].push(x[k]);
            if (series[k].length > points) series[k].shift();
          }
          setNow({ ...x, st });
          draw(cpu.current, series.cpu, 100);
          draw(disk.current, series.disk, Math.max(1024, ...series.disk) * 1.1);
          draw(net.current, series.net, Math.max(1024, ...series.net) * 1.1);
        }
        last = c;
      } catch (_) {
        // the VM stopped or moved: try again at the next tick
      }
    };
    tick();
    const t = setInterval(() => alive && tick(), 2000);
    return () => {
      alive = false;
      clearInterval(t);
    };
  }, [vm]);
  const chart = (title, ref, small, label) => html`<div class="chart">
    <h3>${title} ${small ? html`<small>${small}</small>` : ''}</h3>
    <canvas ref=${ref} width="360" height="80" role="img" aria-label=${label}></canvas>
  </div>`;
  return html`<div class="charts">
    ${chart('CPU', cpu, now && `${now.cpu.toFixed(0)}% of ${now.st.vcpus} vCPU on ${now.st.host}`, 'CPU use over the last two minutes')}
    ${chart('Disk', disk, now && fmtRate(now.disk), 'disk bytes read and written a second, the last two minutes')}
    ${chart('Network', net, now && fmtRate(now.net), 'network bytes in and out a second, the last two minutes')}
  </div>`;
}

function draw(c, series, top) {
  if (!c) return;
  const g = c.getContext('2d');
  g.clearRect(0, 0, c.width, c.height);
  g.strokeStyle = '#2f6fb3';
  g.lineWidth = 2;
  g.beginPath();
  series.forEach((v, i) => {
    const x = (i / (points - 1)) * c.width;
    const y = c.height - (v / top) * (c.height - 4) - 2;
    if (i) g.lineTo(x, y);
    else g.moveTo(x, y);
  });
  g.stroke();
}
