/** The PASS/WARN/FAIL table that `steward doctor` and `steward cluster check|attach` print. */
import type { CheckReport } from '../protocol/index.js';
import { formatTable } from './output.js';

/** One row per check: status, id, what was found and, for a check that did not pass, how to fix it. */
export function formatCheckTable(report: CheckReport): string {
  const rows = report.checks.map((check) => [
    check.status.toUpperCase(),
    check.id,
    check.detail,
    check.status === 'pass' ? '' : (check.fix ?? ''),
  ]);
  const failed = report.checks.filter((check) => check.status === 'fail').length;
  const warned = report.checks.filter((check) => check.status === 'warn').length;
  const summary = failed > 0 ? `${failed} failed, ${warned} warned` : `all passed, ${warned} warned`;
  return `${formatTable(['status', 'check', 'found', 'fix'], rows)}${summary}\n`;
}
