// Builds the portal into dist/web/, which the server serves at `/`. The server sends a strict
// Content-Security-Policy (script-src 'self'; style-src 'self'), so the output must hold no inline script
// or style: no module-preload polyfill (it is inlined), CSS in files, and small assets kept as files.
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import react from '@vitejs/plugin-react';
import { defineConfig } from 'vite';

const here = path.dirname(fileURLToPath(import.meta.url));

export default defineConfig({
  root: here,
  base: '/',
  plugins: [react()],
  build: {
    outDir: path.resolve(here, '../dist/web'),
    emptyOutDir: true,
    assetsInlineLimit: 0,
    modulePreload: { polyfill: false },
    cssCodeSplit: false,
    sourcemap: false,
    target: 'es2022',
    reportCompressedSize: false,
  },
});
