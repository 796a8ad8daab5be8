// Builds the page into OUT (default dist/): index.html, ui/app.js and
// ui/app.css (the app and uPlot bundled and minified by esbuild), ui/favicon.svg.
// Usage: node build.cjs [OUT]. Resolves packages from NODE_PATH too, so the
// node_modules may live in the build directory.
const esbuild = require('esbuild');
const fs = require('fs');
const path = require('path');

const src = path.join(__dirname, 'src');
const out = path.resolve(process.argv[2] || path.join(__dirname, 'dist'));
fs.mkdirSync(path.join(out, 'ui'), { recursive: true });

esbuild.buildSync({
  entryPoints: [path.join(src, 'main.js')],
  bundle: true,
  minify: true,
  format: 'esm',
  target: ['es2020'],
  outfile: path.join(out, 'ui', 'app.js'),
  nodePaths: (process.env.NODE_PATH || '').split(path.delimiter).filter(Boolean),
  logLevel: 'warning',
  legalComments: 'none',
});
fs.copyFileSync(path.join(src, 'index.html'), path.join(out, 'index.html'));
fs.copyFileSync(path.join(src, 'favicon.svg'), path.join(out, 'ui', 'favicon.svg'));
