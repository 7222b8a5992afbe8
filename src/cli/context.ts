/**
 * What every command gets: the global options, where to write, and (on demand) an API client for the
 * resolved server and token. Resolution order, most specific first:
 * server: `--server` > `STEWARD_SERVER` > the stored `current` server;
 * token: `STEWARD_TOKEN` > the stored login for that server.
 * Environment variables work without any credentials file.
 */
import { ApiClient } from './client.js';
import { normaliseServerUrl, readCredentials } from './credentials.js';
import { CliError, UsageError } from './failures.js';
import { formatJson, stripControl } from './output.js';

export interface GlobalOptions {
  /** `true` for a bare `--server` (only `steward cleanup --server` takes that). */
  server?: string | true;
  json?: boolean;
  debug?: boolean;
}

export class CliContext {
  readonly json: boolean;
  readonly debug: boolean;

  constructor(
    readonly globals: GlobalOptions,
    readonly env: NodeJS.ProcessEnv = process.env,
  ) {
    this.json = globals.json === true;
    this.debug = globals.debug === true;
  }

  /** Human output on stdout, stripped of terminal control (server-provided strings are users' text). */
  out(text: string): void {
    process.stdout.write(stripControl(text));
  }

  /**
   * A user's own raw bytes (their step logs), written as they are: `steward logs` shows what the job
   * printed, as `cat` would.
   */
  outRaw(text: string): void {
    process.stdout.write(text);
  }

  /** Notes for people (never data): stderr, so stdout stays parseable. */
  note(text: string): void {
    process.stderr.write(stripControl(text.endsWith('\n') ? text : `${text}\n`));
  }

  printJson(value: unknown): void {
    this.out(formatJson(value));
  }

  /** The server the user named (flag or env) without consulting the credentials file, or null. */
  explicitServer(): string | null {
    if (this.globals.server === true)
      throw new UsageError('--server needs a URL (only `steward cleanup --server` takes none)');
    const named = this.globals.server ?? (this.env.STEWARD_SERVER || undefined);
    return named === undefined ? null : normaliseServerUrl(named);
  }

  async client(): Promise<ApiClient> {
    const explicit = this.explicitServer();
    const envToken = this.env.STEWARD_TOKEN || null;
    // With both from the environment the file is not needed, and a broken file must not get in the way.
    const stored = explicit !== null && envToken !== null ? null : await readCredentials(this.env);
    const server = explicit ?? stored?.current ?? null;
    if (server === null) {
      throw new CliError(
        'STEWARD_UNAUTHENTICATED',
        'not logged in: run `steward login --server URL --user NAME` (or set STEWARD_SERVER and STEWARD_TOKEN)',
      );
    }
    const token = envToken ?? stored?.servers[server]?.token ?? null;
    if (token === null) {
      throw new CliError(
        'STEWARD_UNAUTHENTICATED',
        `not logged in to ${server}: run \`steward login --server ${server} --user NAME\` (or set STEWARD_TOKEN)`,
      );
    }
    return new ApiClient({ server, token, debug: this.debug });
  }
}
