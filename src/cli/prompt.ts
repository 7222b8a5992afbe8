/** Passwords: from stdin (`--password-stdin`, one trailing newline removed) or typed on the terminal unechoed. */
import { UsageError } from './failures.js';

export async function readPasswordFromStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  const password = Buffer.concat(chunks)
    .toString('utf8')
    .replace(/\r?\n$/, '');
  if (password === '') throw new UsageError('--password-stdin: stdin was empty');
  return password;
}

/** `count` passwords from stdin, one a line (for a change: the current one, then the new one). */
export async function readPasswordLinesFromStdin(count: number): Promise<string[]> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  const lines = Buffer.concat(chunks).toString('utf8').split(/\r?\n/);
  if (lines.length > count && lines.slice(count).every((line) => line === '')) lines.length = count;
  if (lines.length !== count || lines.some((line) => line === ''))
    throw new UsageError(
      `--password-stdin: expected ${count === 1 ? 'one password' : `${count} passwords, one a line`} on stdin`,
    );
  return lines;
}

/** Reads a line from the controlling terminal with echo off. Without a terminal this is a usage error. */
export async function promptPassword(label = 'Password: '): Promise<string> {
  const input = process.stdin;
  if (!input.isTTY)
    throw new UsageError('no terminal to prompt for the password on; pipe it in with --password-stdin');
  process.stderr.write(label);
  input.setRawMode(true);
  input.resume();
  input.setEncoding('utf8');
  try {
    return await new Promise<string>((resolve, reject) => {
      let typed = '';
      const onData = (text: string): void => {
        for (const character of text) {
          if (character === '\r' || character === '\n' || character === '\u0004') {
            input.off('data', onData);
            resolve(typed);
            return;
          }
          if (character === '\u0003') {
            input.off('data', onData);
            reject(new UsageError('interrupted'));
            return;
          }
          if (character === '\u007f' || character === '\b') typed = typed.slice(0, -1);
          else typed += character;
        }
      };
      input.on('data', onData);
    });
  } finally {
    input.setRawMode(false);
    input.pause();
    process.stderr.write('\n');
  }
}
