// The graphical console: noVNC over the display WebSocket, whose binary
// messages are the guest's RFB (VNC) stream relayed by corrald. noVNC is
// loaded only when a display is opened (its own chunk). We open the
// WebSocket ourselves and hand it to noVNC, to show a close frame's
// reason (the guest stopped, its host went away) as it came.
import { useEffect, useRef, useState } from 'preact/hooks';
import { displaySocket } from './api.js';
import { html } from './util.js';

export function Display({ vm }) {
  const box = useRef(null);
  const [line, setLine] = useState('connecting…');
  useEffect(() => {
    let rfb = null;
    let gone = false;
    // noVNC first: a socket opened before it listens would lose the
    // server's first message (RFB's version) to nobody.
    import('@novnc/novnc')
      .then(({ default: RFB }) => {
        if (gone) return;
        const ws = displaySocket(vm);
        ws.addEventListener('close', (e) => {
          if (!gone) setLine(`closed${e.reason ? ': ' + e.reason : e.code === 1006 ? ': connection lost' : ''}`);
        });
        rfb = new RFB(box.current, ws);
        rfb.scaleViewport = true;
        rfb.focusOnClick = true;
        rfb.addEventListener('connect', () => {
          setLine(`${vm}: connected; click the screen to type`);
          rfb.focus();
        });
        rfb.addEventListener('desktopname', (e) => box.current && box.current.setAttribute('aria-label', `screen of ${e.detail.name}`));
      })
      .catch((err) => setLine(`the VNC client did not load: ${err}`));
    return () => {
      gone = true;
      if (rfb) rfb.disconnect();
    };
  }, [vm]);
  return html`<div class="display">
    <p class="display-state" aria-live="polite">${line}</p>
    <div ref=${box} class="screen" id="screen" role="img" aria-label="the guest's screen"></div>
  </div>`;
}
