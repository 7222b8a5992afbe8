import { describe, expect, it } from 'vitest';
import {
  outcomeOf,
  retryDelayMs,
  rulesFor,
  signatureHeader,
  verifySignatureHeader,
  webhookSignature,
  type RuleScope,
} from '../../src/protocol/index.js';

type Rule = RuleScope & { id: string };
const rule = (id: string, when: Rule['when'], schedule: string | null = null): Rule => ({
  id,
  when,
  schedule,
});
const ids = (rules: Rule[]) => rules.map((r) => r.id);

describe('notification rule matching', () => {
  it('counts failed, lost and expired as failures, succeeded as success, canceled as neither', () => {
    expect(outcomeOf('succeeded')).toBe('success');
    expect(outcomeOf('failed')).toBe('failure');
    expect(outcomeOf('lost')).toBe('failure');
    expect(outcomeOf('expired')).toBe('failure');
    expect(outcomeOf('canceled')).toBe('canceled');
    expect(outcomeOf('running')).toBeUndefined();
  });

  it('fires failure rules on failures, success rules on successes and always rules on every end', () => {
    const rules = [rule('f', 'failure'), rule('s', 'success'), rule('a', 'always')];
    expect(ids(rulesFor(rules, { state: 'failed', schedule: null }))).toEqual(['f', 'a']);
    expect(ids(rulesFor(rules, { state: 'lost', schedule: null }))).toEqual(['f', 'a']);
    expect(ids(rulesFor(rules, { state: 'succeeded', schedule: null }))).toEqual(['s', 'a']);
    expect(ids(rulesFor(rules, { state: 'canceled', schedule: null }))).toEqual(['a']);
  });

  it('never fires for a job that has not ended', () => {
    expect(rulesFor([rule('a', 'always')], { state: 'running', schedule: null })).toEqual([]);
  });

  it('uses only default rules for a job no schedule started, whatever schedule rules exist', () => {
    const rules = [rule('default', 'failure'), rule('nightly', 'always', 'nightly')];
    expect(ids(rulesFor(rules, { state: 'failed', schedule: null }))).toEqual(['default']);
  });

  it("uses a schedule's own rules instead of the default for that schedule's jobs", () => {
    const rules = [rule('default', 'failure'), rule('nightly', 'success', 'nightly')];
    expect(ids(rulesFor(rules, { state: 'succeeded', schedule: 'nightly' }))).toEqual(['nightly']);
    // The schedule's rules replace the default: its failure is not sent by the default failure rule.
    expect(ids(rulesFor(rules, { state: 'failed', schedule: 'nightly' }))).toEqual([]);
  });

  it('falls back to the default rules for a schedule that has no rules of its own', () => {
    const rules = [rule('default', 'failure'), rule('nightly', 'always', 'nightly')];
    expect(ids(rulesFor(rules, { state: 'failed', schedule: 'hourly' }))).toEqual(['default']);
  });
});

describe('notification retry delays', () => {
  it('doubles from the initial delay up to the cap, with the upper half random', () => {
    const options = { initialMs: 1000, maxMs: 10_000 };
    expect(retryDelayMs(1, options, () => 0)).toBe(500);
    expect(retryDelayMs(1, options, () => 1)).toBe(1000);
    expect(retryDelayMs(2, options, () => 0)).toBe(1000);
    expect(retryDelayMs(3, options, () => 1)).toBe(4000);
    expect(retryDelayMs(10, options, () => 0)).toBe(5000);
    expect(retryDelayMs(10, options, () => 1)).toBe(10_000);
    expect(retryDelayMs(1000, options, () => 1)).toBe(10_000);
  });
});

describe('webhook signatures', () => {
  const secret = 'a-secret-of-enough-length';
  const body = '{"v":1,"type":"job.ended"}';

  it('signs timestamp and body with HMAC-SHA256 in the header and verifies its own header', () => {
    const header = signatureHeader(secret, 1_800_000_000, body);
    expect(header).toBe(`t=1800000000,v1=${webhookSignature(secret, 1_800_000_000, body)}`);
    expect(header).toMatch(/^t=1800000000,v1=[0-9a-f]{64}$/);
    expect(verifySignatureHeader(secret, header, body, 1_800_000_010)).toBe(true);
  });

  it('refuses a changed body, another secret, a changed timestamp or an old message', () => {
    const header = signatureHeader(secret, 1_800_000_000, body);
    expect(verifySignatureHeader(secret, header, `${body} `, 1_800_000_000)).toBe(false);
    expect(verifySignatureHeader('another-secret-of-length', header, body, 1_800_000_000)).toBe(false);
    expect(
      verifySignatureHeader(secret, header.replace('t=1800000000', 't=1800000001'), body, 1_800_000_000),
    ).toBe(false);
    expect(verifySignatureHeader(secret, header, body, 1_800_000_000 + 301)).toBe(false);
    expect(verifySignatureHeader(secret, 'garbage', body, 1_800_000_000)).toBe(false);
  });
});
