// The executor is a process (main.ts), not a library; these are exported for tests.
export { assumeIdentity, cleanEnvironment } from './identity.js';
