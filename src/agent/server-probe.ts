/**
 * What the agent tells the server about itself for the cluster checks: the fingerprints of the offer keys
 * it trusts, and whether the server's URL answers from this machine (its executors need it to fetch
 * workflows and upload results). The probe runs in the background, at most once per interval, and never
 * delays a heartbeat: the heartbeat carries the last result.
 */
import type { Logger } from 'pino';
import { publicKeyFingerprint, type Heartbeat } from '../protocol/index.js';

export type ServerProbe = NonNullable<Heartbeat['serverProbe']>;
export type AgentSelfReport = Pick<Heartbeat, 'keyFingerprints' | 'serverProbe'>;

/** Longest wait for the server's answer. */
const PROBE_TIMEOUT_MS = 5_000;

export class ServerProber {
  private last: ServerProbe | undefined;
  private inFlight: Promise<void> | undefined;
  private lastStarted = 0;
  private readonly fingerprints: string[];

  constructor(
    publicKeys: readonly string[],
    /** The server's URL; undefined: the URL of the last offer, once one came. */
    private url: string | undefined,
    private readonly intervalMs: number,
    private readonly log: Logger,
  ) {
    this.fingerprints = publicKeys.flatMap((pem) => {
      try {
        return [publicKeyFingerprint(pem)];
      } catch {
        return [];
      }
    });
  }

  /** An offer named the server's URL: probe that one when none is configured. */
  learnUrl(url: string): void {
    this.url ??= url;
  }

  /** The fields for the next heartbeat; starts a new probe when the last is older than the interval. */
  report(now = Date.now()): AgentSelfReport {
    if (this.url !== undefined && !this.inFlight && now - this.lastStarted >= this.intervalMs) {
      this.lastStarted = now;
      this.inFlight = this.probe(this.url).finally(() => (this.inFlight = undefined));
    }
    return { keyFingerprints: this.fingerprints, ...(this.last ? { serverProbe: this.last } : {}) };
  }

  private async probe(url: string): Promise<void> {
    const target = `${url.replace(/\/+$/, '')}/api/health`;
    try {
      const response = await fetch(target, { signal: AbortSignal.timeout(PROBE_TIMEOUT_MS) });
      await response.body?.cancel().catch(() => undefined);
      this.last = response.ok
        ? { url, ok: true }
        : { url, ok: false, error: `GET ${target} answered ${response.status}` };
    } catch (error) {
      const cause = (error as { cause?: { code?: string; message?: string } }).cause;
      const reason =
        cause?.code ?? cause?.message ?? (error instanceof Error ? error.message : String(error));
      this.last = { url, ok: false, error: `GET ${target} failed: ${reason}`.slice(0, 500) };
      this.log.warn({ url, reason }, 'the server URL does not answer from this machine');
    }
  }
}
