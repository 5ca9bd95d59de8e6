#!/usr/bin/env node
// node build.js [OUTDIR [NODE_MODULES]]: builds the Cockpit package into OUTDIR (default
// ../build/cockpit/vm2kvm): manifest.json, index.html, index.js, index.css and the fonts
// PatternFly's CSS names.  NODE_MODULES is where `npm ci` put the dependencies (default
// ./node_modules; scripts/build-cockpit.sh keeps them in build/ and decides whether a build is
// needed at all).
'use strict';

const fs = require('node:fs');
const path = require('node:path');

const here = __dirname;
const outdir = path.resolve(process.argv[2] || path.join(here, '..', 'build', 'cockpit', 'vm2kvm'));
const modules = path.resolve(process.argv[3] || path.join(here, 'node_modules'));
const esbuild = require(path.join(modules, 'esbuild'));

async function main() {
    // A fresh directory each time: a renamed font must not linger from an older build.
    fs.rmSync(outdir, { recursive: true, force: true });
    fs.mkdirSync(outdir, { recursive: true });
    await esbuild.build({
        entryPoints: { index: path.join(here, 'src', 'index.jsx') },
        bundle: true,
        nodePaths: [modules],
        outdir,
        minify: true,
        // cockpit 287's pages run in the Chromium/Firefox versions Cockpit itself supports.
        target: ['es2020'],
        jsx: 'automatic',
        loader: { '.js': 'jsx', '.woff': 'file', '.woff2': 'file', '.ttf': 'file', '.eot': 'file', '.svg': 'file', '.png': 'file', '.jpg': 'file' },
        assetNames: 'assets/[name]-[hash]',
        // window.cockpit comes from the installed cockpit (../base1/cockpit.js), so the page
        // always speaks the protocol of the bridge it runs against.
        define: { 'process.env.NODE_ENV': '"production"' },
        legalComments: 'none',
        logLevel: 'warning',
    });
    for (const name of ['manifest.json', 'index.html']) {
        fs.copyFileSync(path.join(here, 'src', name), path.join(outdir, name));
    }
}

main().catch(err => {
    console.error(err.message || err);
    process.exit(1);
});
