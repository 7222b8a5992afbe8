#!/usr/bin/env node
import('../dist/cli/main.js').catch((error) => {
  if (error && error.code === 'ERR_MODULE_NOT_FOUND' && String(error.message).includes('dist/cli/main.js')) {
    process.stderr.write('steward: not built yet; run `npm run build` (npm install does it)\n');
    process.exit(1);
  }
  throw error;
});
