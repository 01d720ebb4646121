// What every page shares: the template tag, roles, the error line.
import { h } from 'preact';
import htm from 'htm';

export const html = htm.bind(h);

const ranks = { viewer: 1, operator: 2, admin: 3 };
// may says whether the logged-in client's role reaches need: the portal
// offers only what the role may do (the API refuses the rest anyway).
export const may = (who, need) => (ranks[who?.role] || 0) >= ranks[need];

export const Err = ({ e }) => (e ? html`<p class="error" role="alert">${e}</p>` : null);
