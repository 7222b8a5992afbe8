/**
 * An agent whose executor died while loading a job gives up its claim on the job's attempt over HTTP, with
 * the job token of the offer (the only call an agent makes to a server). The hand-back event says the same,
 * but it waits behind any backlog in the events queue; an agent given the redelivered offer before it lands
 * would be refused. The server answers 204 whether or not there was a claim to release (the executor may
 * have died before it fetched), so the call can simply be repeated.
 */
import type { JobOffer } from '../protocol/index.js';

/** Pauses between tries while the server does not answer, or answers 502/503/504 (a proxy, a restart). */
const PAUSES_MS = [100, 200, 400, 800, 1600, 2000];

export async function releaseClaim(
  offer: Pick<JobOffer, 'serverUrl' | 'jobId' | 'jobToken'>,
  agentId: string,
  signal: AbortSignal = AbortSignal.timeout(10_000),
): Promise<void> {
  const url = `${offer.serverUrl.replace(/\/+$/, '')}/api/exec/jobs/${encodeURIComponent(offer.jobId)}/claim?${new URLSearchParams({ agent: agentId }).toString()}`;
  let failure = '';
  for (const pause of [...PAUSES_MS, undefined]) {
    try {
      const response = await fetch(url, {
        method: 'DELETE',
        headers: { authorization: `Bearer ${offer.jobToken}` },
        signal,
      });
      const body = await response.text();
      if (response.ok) return;
      failure = `the server answered ${response.status}: ${body.slice(0, 300)}`;
      if (response.status < 502 || response.status > 504) break;
    } catch (error) {
      if (signal.aborted) throw new Error(`releasing the claim timed out (${failure || 'no answer'})`);
      failure = (error as Error).message;
    }
    if (pause === undefined) break;
    await new Promise((resolve) => setTimeout(resolve, pause));
  }
  throw new Error(`releasing the claim failed: ${failure}`);
}
