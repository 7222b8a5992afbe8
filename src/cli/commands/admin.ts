/**
 * `steward user`, `steward token`, `steward whoami`, `steward agents` (and `agents drain|resume`): each group
 * in its own file under admin/, registered here in the order `steward --help` lists them.
 */
import type { Command } from 'commander';
import { registerAgentCommands } from './admin/agents.js';
import { registerTokenCommands } from './admin/tokens.js';
import { registerUserCommands, registerWhoamiCommand } from './admin/users.js';

export function registerAdminCommands(program: Command): void {
  registerUserCommands(program);
  registerTokenCommands(program);
  registerWhoamiCommand(program);
  registerAgentCommands(program);
}
