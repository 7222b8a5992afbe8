/** Who a request acts for, once its token (or session) is verified. */
import type { Role } from '../protocol/index.js';

export interface Principal {
  user: string;
  role: Role;
  tokenId: string;
  /**
   * For LDAP users, the group DNs the directory reported at its last check (renewed every `cacheTtl`, like
   * the role): space memberships of LDAP groups match these. Absent for local users.
   */
  directoryGroups?: readonly string[];
}
