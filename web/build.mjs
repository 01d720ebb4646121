// Builds the portal into dist/: one JS bundle and one CSS file (xterm's
// and ours), content-hashed, and index.html naming them. corrald embeds
// dist/ (embed.go); nothing is loaded from elsewhere at run time.
import * as esbuild from 'esbuild';
import { createHash } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';

rmSync('dist', { recursive: true, force: true });
mkdirSync('dist/assets', { recursive: true });
const result = await esbuild.build({
  entryPoints: ['src/app.js'],
  bundle: true,
  minify: true,
  format: 'esm',
  // noVNC, loaded only when a graphical console opens, is a chunk of its own.
  splitting: true,
  target: ['chrome110', 'firefox110'],
  outdir: 'dist/assets',
  entryNames: '[name]-[hash]',
  chunkNames: '[name]-[hash]',
  metafile: true,
  legalComments: 'none',
  logLevel: 'warning',
});
const outputs = result.metafile.outputs;
const outs = Object.keys(outputs).map((p) => p.replace(/^dist\//, ''));
const js = Object.keys(outputs).find((p) => outputs[p].entryPoint === 'src/app.js').replace(/^dist\//, '');
const css = outs.find((p) => p.endsWith('.css'));
const html = readFileSync('src/index.html', 'utf8').replace('{{js}}', '/' + js).replace('{{css}}', '/' + css);
writeFileSync('dist/index.html', html);
// What the build was made from, so a Go test can tell a dist/ that lags
// behind its sources (web/embed_test.go hashes the same files alike).
const sources = ['build.mjs', 'package-lock.json', ...readdirSync('src').sort().map((f) => 'src/' + f)];
const sum = createHash('sha256');
for (const f of sources) sum.update(f + '\n').update(readFileSync(f));
writeFileSync('dist/source.sha256', sum.digest('hex') + '\n');
console.log(`portal: dist/index.html, ${outs.join(', ')}`);
