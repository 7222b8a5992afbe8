/**
 * What a notification says: the webhook's JSON body (`NotificationMessage`) from a job as stored, and the
 * same facts as an email's subject and plain text. Built when sent, from the job's record, which no longer
 * changes once the job has ended.
 */
import { outcomeOf, type NotificationMessage } from '../../protocol/index.js';
import type { JobDetailRecord, NotificationRuleRecord } from '../../store/index.js';
import { iso } from '../views.js';

/** The job's page in the portal (the portal's route `/jobs/:id`). */
export function jobPageUrl(baseUrl: string, jobId: string): string {
  return `${baseUrl.replace(/\/+$/, '')}/jobs/${encodeURIComponent(jobId)}`;
}

/** A step error is cut to this many characters in messages (the whole log stays on the job's page). */
const MAX_ERROR_CHARS = 2000;

export function jobEndMessage(
  deliveryId: string,
  rule: NotificationRuleRecord,
  detail: JobDetailRecord,
  baseUrl: string,
  schedule: string | null,
): NotificationMessage {
  const { job, steps } = detail;
  const failed = steps.find((step) => step.state === 'failed');
  return {
    v: 1,
    type: 'job.ended',
    deliveryId,
    rule: { id: rule.id, when: rule.when, schedule: rule.schedule },
    job: {
      id: job.id,
      state: job.state,
      outcome: outcomeOf(job.state) ?? 'failure',
      user: job.user,
      workflow: { space: job.workflow.space, name: job.workflow.name, version: job.workflow.version },
      attempt: job.attempt,
      schedule,
      createdAt: iso(job.createdAt),
      startedAt: iso(job.startedAt),
      finishedAt: iso(job.finishedAt),
      error: job.error && { code: job.error.code, message: cut(job.error.message) },
      failingStep: failed
        ? { id: failed.id, error: failed.message === null ? null : cut(failed.message) }
        : null,
      url: jobPageUrl(baseUrl, job.id),
    },
  };
}

/** The message `steward notify test` sends: no job, the rule it tests. */
export function testMessage(deliveryId: string, rule: NotificationRuleRecord): NotificationMessage {
  return {
    v: 1,
    type: 'notification.test',
    deliveryId,
    rule: { id: rule.id, when: rule.when, schedule: rule.schedule },
    job: null,
  };
}

/** The email form of a message: a subject naming job, state and workflow, and one fact per line. */
export function emailOf(message: NotificationMessage): { subject: string; text: string } {
  const job = message.job;
  if (job === null) {
    return {
      subject: '[Steward] test notification',
      text: `This is a test of Steward notification rule ${message.rule.id} (when: ${message.rule.when}).\nDelivery: ${message.deliveryId}\n`,
    };
  }
  const workflow = `${job.workflow.space}/${job.workflow.name}@${job.workflow.version}`;
  const lines = [
    `Job ${job.id} ${job.state}.`,
    '',
    `Job:       ${job.id}`,
    `State:     ${job.state}`,
    `Workflow:  ${workflow}`,
    `User:      ${job.user}`,
    `Attempt:   ${job.attempt}`,
    ...(job.schedule === null ? [] : [`Schedule:  ${job.schedule}`]),
    `Started:   ${job.startedAt ?? '-'}`,
    `Finished:  ${job.finishedAt ?? '-'}`,
  ];
  if (job.failingStep) lines.push(`Failing step: ${job.failingStep.id}`);
  if (job.failingStep?.error) lines.push(`Step error: ${job.failingStep.error}`);
  if (job.error) lines.push(`Error:     ${job.error.code}: ${job.error.message}`);
  lines.push('', `Open the job: ${job.url}`, '', `Delivery ${message.deliveryId} (rule ${message.rule.id}).`);
  return { subject: `[Steward] job ${job.id} ${job.state}: ${workflow}`, text: `${lines.join('\n')}\n` };
}

function cut(text: string): string {
  return text.length <= MAX_ERROR_CHARS ? text : `${text.slice(0, MAX_ERROR_CHARS)}…`;
}
