// The serial console: xterm.js over the console WebSocket. The first
// message (text) says where the guest runs and whether we may type; then
// binary messages both ways. A close frame's reason is shown as it came.
import { useEffect, useRef, useState } from 'preact/hooks';
import { Terminal } from '@xterm/xterm';
import '@xterm/xterm/css/xterm.css';
import { consoleSocket } from './api.js';
import { html } from './util.js';


export function Console({ vm }) {
  const box = useRef(null);
  const [line, setLine] = useState('connecting…');
  useEffect(() => {
    const term = new Terminal({ convertEol: false, cursorBlink: true, rows: 24, cols: 100, fontSize: 14, scrollback: 2000 });
    term.open(box.current);
    const ws = consoleSocket(vm, true);
    const enc = new TextEncoder();
    let writer = false;
    ws.onmessage = (m) => {
      if (typeof m.data === 'string') {
        const hello = JSON.parse(m.data);
        writer = hello.writer;
        setLine(`${hello.vm} on ${hello.host}: ${writer ? 'you type here' : hello.message || 'read-only'}`);
        term.focus();
        return;
      }
      term.write(new Uint8Array(m.data));
    };
    ws.onclose = (e) => setLine(`closed${e.reason ? ': ' + e.reason : e.code === 1006 ? ': connection lost' : ''}`);
    const sub = term.onData((d) => writer && ws.readyState === WebSocket.OPEN && ws.send(enc.encode(d)));
    return () => {
      sub.dispose();
      ws.close();
      term.dispose();
    };
  }, [vm]);
  return html`<div class="console">
    <p class="console-state" aria-live="polite">${line}</p>
    <div ref=${box} class="term" id="terminal"></div>
  </div>`;
}
