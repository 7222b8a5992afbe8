export * from './errors.js';
export * from './states.js';
export * from './messages.js';
export * from './signing.js';
export * from './api.js';
export * from './duration.js';
export * from './names.js';
export * from './checks.js';
