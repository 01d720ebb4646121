// A live CPU chart of a running VM: its counters every 2 s (the stats of
// its host's hypervisor), drawn as the share of its vCPUs it used.
import { useEffect, useRef, useState } from 'preact/hooks';
import { get } from './api.js';
import { html } from './util.js';

const points = 60;

export function Cpu({ vm }) {
  const canvas = useRef(null);
  const [now, setNow] = useState(null);
  useEffect(() => {
    let last = null;
    const series = [];
    let alive = true;
    const tick = async () => {
      try {
        const st = await get(`/v1/vms/${encodeURIComponent(vm)}/stats`);
        const at = performance.now();
        if (last) {
          const raw = (100 * (st.cpu_time_ns - last.ns)) / ((at - last.at) * 1e6 * Math.max(1, st.vcpus));
          const pct = Math.max(0, Math.min(100, raw)); // sampling jitter can exceed 100
          series.push(pct);
          if (series.length > points) series.shift();
          setNow({ pct, st });
          draw(canvas.current, series);
        }
        last = { ns: st.cpu_time_ns, at };
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
  return html`<div class="chart">
    <h3>CPU ${now ? html`<small>${now.pct.toFixed(0)}% of ${now.st.vcpus} vCPU on ${now.st.host}</small>` : ''}</h3>
    <canvas ref=${canvas} width="600" height="80" role="img" aria-label="CPU use over the last two minutes"></canvas>
  </div>`;
}

function draw(c, series) {
  if (!c) return;
  const g = c.getContext('2d');
  g.clearRect(0, 0, c.width, c.height);
  g.strokeStyle = '#2f6fb3';
  g.lineWidth = 2;
  g.beginPath();
  series.forEach((v, i) => {
    const x = (i / (points - 1)) * c.width;
    const y = c.height - (v / 100) * (c.height - 4) - 2;
    if (i) g.lineTo(x, y);
    else g.moveTo(x, y);
  });
  g.stroke();
}
