// The portal's only way to corrald: the public /v1 API of the host that
// served it, with the API token the user logged in with, or with the
// client certificate the browser presents (then no token is sent). Either
// choice lives in this tab's sessionStorage only: closing the tab forgets it.

const KEY = 'corral.token';
const CERT = 'corral.cert';

export const token = {
  get: () => sessionStorage.getItem(KEY) || '',
  set: (t) => {
    sessionStorage.setItem(KEY, t);
    sessionStorage.removeItem(CERT);
  },
  // useCert logs in with the browser's client certificate instead.
  useCert: () => {
    sessionStorage.removeItem(KEY);
    sessionStorage.setItem(CERT, '1');
  },
  active: () => !!sessionStorage.getItem(KEY) || !!sessionStorage.getItem(CERT),
  clear: () => {
    sessionStorage.removeItem(KEY);
    sessionStorage.removeItem(CERT);
  },
};

// protocols are a WebSocket's subprotocols: proto, and the token beside it
// when there is one (a certificate travels in the TLS handshake).
const protocols = (proto) => (token.get() ? [proto, 'corral.bearer.' + token.get()] : [proto]);

// ApiError carries the API's error code (unauthenticated, forbidden,
// not_found, conflict, ...) and message.
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

let onUnauthenticated = () => {};
// whenLoggedOut sets what happens when the token stops working.
export function whenLoggedOut(fn) {
  onUnauthenticated = fn;
}

function headers(extra) {
  const h = { Accept: 'application/json', ...extra };
  const t = token.get();
  if (t) h.Authorization = 'Bearer ' + t;
  return h;
}

async function failure(resp) {
  let code = 'unknown';
  let msg = resp.statusText;
  try {
    const e = await resp.json();
    code = e.code || code;
    msg = e.message || msg;
  } catch (_) {
    // not JSON: keep the status text
  }
  if (resp.status === 401) onUnauthenticated(msg);
  return new ApiError(resp.status, code, msg);
}

// call sends one request; body is JSON unless it is a Blob or File.
export async function call(method, path, body, onUpload) {
  if (onUpload && body instanceof Blob) return upload(method, path, body, onUpload);
  const init = { method, headers: headers() };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers['Content-Type'] = 'application/json';
  }
  const resp = await fetch(path, init);
  if (!resp.ok) throw await failure(resp);
  const text = await resp.text();
  return text ? JSON.parse(text) : null;
}

export const get = (path) => call('GET', path);

// upload sends a file with progress (fetch has none for uploads).
function upload(method, path, blob, onUpload) {
  return new Promise((resolve, reject) => {
    const x = new XMLHttpRequest();
    x.open(method, path);
    for (const [k, v] of Object.entries(headers({ 'Content-Type': 'application/octet-stream' }))) x.setRequestHeader(k, v);
    x.upload.onprogress = (e) => e.lengthComputable && onUpload(e.loaded, e.total);
    x.onload = () => {
      let e = {};
      try {
        e = JSON.parse(x.responseText || '{}');
      } catch (_) {
        // keep {}
      }
      if (x.status >= 200 && x.status < 300) return resolve(e);
      if (x.status === 401) onUnauthenticated(e.message);
      reject(new ApiError(x.status, e.code || 'unknown', e.message || x.statusText));
    };
    x.onerror = () => reject(new ApiError(0, 'unavailable', 'the upload failed: connection lost'));
    x.send(blob);
  });
}

// events follows the event log (Server-Sent Events read through fetch, so
// that the token travels as a header), calling onEvent for each, and
// reconnects from the last one seen. It returns a function that stops.
export function events(onEvent, onState) {
  let stopped = false;
  let last = '';
  const ctl = { abort: () => {} };
  (async () => {
    while (!stopped) {
      const ac = new AbortController();
      ctl.abort = () => ac.abort();
      try {
        const h = headers({ Accept: 'text/event-stream' });
        if (last) h['Last-Event-ID'] = last;
        const resp = await fetch('/v1/events?limit=50', { headers: h, signal: ac.signal });
        if (!resp.ok) throw await failure(resp);
        onState && onState(true);
        const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
        let buf = '';
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += value;
          let i;
          while ((i = buf.indexOf('\n\n')) >= 0) {
            const block = buf.slice(0, i);
            buf = buf.slice(i + 2);
            let data = '';
            for (const line of block.split('\n')) {
              if (line.startsWith('id:')) last = line.slice(3).trim();
              else if (line.startsWith('data:')) data += line.slice(5).trim();
            }
            if (data) onEvent(JSON.parse(data));
          }
        }
      } catch (e) {
        if (stopped || (e instanceof ApiError && e.status === 401)) return;
      }
      onState && onState(false);
      await new Promise((r) => setTimeout(r, 2000));
    }
  })();
  return () => {
    stopped = true;
    ctl.abort();
  };
}

// displaySocket opens a VM's graphical display (RFB for noVNC), the
// token again a subprotocol.
export function displaySocket(vm) {
  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const ws = new WebSocket(`${proto}//${location.host}/v1/vms/${encodeURIComponent(vm)}/vnc`, protocols('corral.vnc'));
  ws.binaryType = 'arraybuffer';
  return ws;
}

// consoleSocket opens a VM's serial console: a WebSocket whose token
// travels as a subprotocol (browsers cannot set headers on WebSockets).
export function consoleSocket(vm, write) {
  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const url = `${proto}//${location.host}/v1/vms/${encodeURIComponent(vm)}/console/attach?write=${write}`;
  const ws = new WebSocket(url, protocols('corral.console'));
  ws.binaryType = 'arraybuffer';
  return ws;
}
