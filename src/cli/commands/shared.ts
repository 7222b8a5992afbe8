import { InvalidArgumentError, type Command } from 'commander';
import { CliContext, type GlobalOptions } from '../context.js';

/** The context for a command's action: its own options merged with the program's global ones. */
export function contextOf(command: Command): CliContext {
  return new CliContext(command.optsWithGlobals<GlobalOptions>());
}

export function positiveInteger(name: string, max = Number.MAX_SAFE_INTEGER): (value: string) => number {
  return (value) => {
    if (!/^[0-9]+$/.test(value) || Number(value) < 1 || Number(value) > max) {
      throw new InvalidArgumentError(
        `${name}: expected a whole number from 1 to ${max}, got ${JSON.stringify(value)}`,
      );
    }
    return Number(value);
  };
}

/** Like `positiveInteger` but 0 is allowed (counts such as `--retries 0`). */
export function wholeNumber(name: string, max = Number.MAX_SAFE_INTEGER): (value: string) => number {
  return (value) => {
    if (!/^[0-9]+$/.test(value) || Number(value) > max) {
      throw new InvalidArgumentError(
        `${name}: expected a whole number from 0 to ${max}, got ${JSON.stringify(value)}`,
      );
    }
    return Number(value);
  };
}

export function collect(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value];
}
