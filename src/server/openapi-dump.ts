/** Prints the OpenAPI document (`npm run openapi` writes it to docs/openapi.json, which is committed). */
import { buildOpenApiDocument } from './openapi.js';
import { STEWARD_VERSION } from './version.js';

process.stdout.write(`${JSON.stringify(buildOpenApiDocument(STEWARD_VERSION), null, 2)}\n`);
