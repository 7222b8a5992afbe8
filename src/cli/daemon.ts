/**
 * Long-running entry points behind `steward up`, `steward server` and `steward agent`.
 * (Wired by the integration work; the CLI commands only parse options and call these.)
 */
export interface UpOptions {
  host?: string;
  port?: number;
  dataDir?: string;
  config?: string;
  debug?: boolean;
}
export interface ServerOptions extends UpOptions {}
export interface AgentOptions {
  config?: string;
  dataDir?: string;
  debug?: boolean;
}

export async function runUp(_options: UpOptions): Promise<void> {
  throw new Error('not implemented yet');
}
export async function runServer(_options: ServerOptions): Promise<void> {
  throw new Error('not implemented yet');
}
export async function runAgent(_options: AgentOptions): Promise<void> {
  throw new Error('not implemented yet');
}
