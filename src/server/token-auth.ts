/**
 * Bearer tokens: verifying a token secret (login, API or portal session token) and issuing and revoking
 * named API tokens. Disabled users are refused whatever token they hold; refusals are audited.
 */
import { StewardError } from '../protocol/index.js';
import type { Clock, FoundToken, Store, TokenRecord } from '../store/index.js';
import type { AuditLog } from './audit.js';
import type { DirectoryChecks } from './directory-checks.js';
import type { Principal } from './principal.js';
import { newId, newSecret, sha256Hex } from './secrets.js';

/** The token kinds an `Authorization: Bearer` header may carry (portal sessions travel as a cookie). */
export const BEARER_KINDS: readonly TokenRecord['kind'][] = ['login', 'api'];

/** last_used_at is written at most this often per token: reads should not each cost a write. */
const TOUCH_INTERVAL_MS = 60_000;

const DISABLED = 'this user is disabled; an admin can enable it (`steward user enable NAME`)';

export function bearerOf(header: string | undefined): string | undefined {
  if (!header) return undefined;
  const match = /^Bearer\s+(\S+)\s*$/i.exec(header);
  return match?.[1];
}

export class TokenAuth {
  constructor(
    private readonly store: Store,
    private readonly audit: AuditLog,
    private readonly directoryChecks: DirectoryChecks,
    private readonly clock: Clock,
  ) {}

  /** See `Authenticator.authenticateSecret`. */
  async authenticateSecret(
    secret: string,
    kinds: readonly TokenRecord['kind'][],
    source?: string,
  ): Promise<Principal> {
    const refuse = async (reason: string, actor = 'anonymous', target: string | null = null) => {
      await this.audit.record({ actor, action: 'token.refused', target, source, detail: { reason } });
    };
    if (!secret.startsWith('stw_')) {
      await refuse('malformed token');
      throw new StewardError('STEWARD_UNAUTHENTICATED', 'invalid or expired token');
    }
    const found = await this.store.findToken(sha256Hex(secret));
    const now = this.clock();
    // Checked first: disabling revoked the user's tokens too, and "disabled" is what its holder needs to hear.
    if (found?.user.disabled) {
      await refuse('user disabled', found.user.name, found.token.id);
      throw new StewardError('STEWARD_UNAUTHENTICATED', DISABLED);
    }
    const refusal = refusalOf(found, kinds);
    if (refusal !== undefined || !found) {
      await refuse(refusal ?? 'unknown token', found?.user.name, found?.token.id ?? null);
      throw new StewardError('STEWARD_UNAUTHENTICATED', 'invalid or expired token');
    }
    let role = found.user.role;
    let directoryGroups: readonly string[] | undefined;
    if (found.user.source === 'ldap') {
      ({ role, groups: directoryGroups } = await this.directoryChecks.current(
        found.user,
        found.token.id,
        source,
        now,
      ));
    }
    await this.touch(found, now, source);
    return {
      user: found.user.name,
      role,
      tokenId: found.token.id,
      ...(directoryGroups !== undefined ? { directoryGroups } : {}),
    };
  }

  async createApiToken(
    principal: Principal,
    name: string,
    expiresInDays: number | undefined,
    source: string,
  ): Promise<{ token: string; record: TokenRecord }> {
    const now = this.clock();
    const token = newSecret('stw_');
    const record: TokenRecord = {
      id: newId(),
      user: principal.user,
      name,
      kind: 'api',
      createdAt: now,
      expiresAt: expiresInDays === undefined ? null : now + expiresInDays * 86_400_000,
      lastUsedAt: null,
      revoked: false,
    };
    await this.store.createToken({ ...record, tokenHash: sha256Hex(token) });
    await this.audit.record({
      actor: principal.user,
      action: 'token.create',
      target: record.id,
      source,
      detail: { name, expiresInDays: expiresInDays ?? null },
    });
    return { token, record };
  }

  /** See `Authenticator.revokeApiToken`. */
  async revokeApiToken(principal: Principal, id: string, source: string): Promise<void> {
    const token = await this.store.getToken(id);
    const mayRevoke = token !== undefined && (token.user === principal.user || principal.role === 'admin');
    const revoked = mayRevoke && (await this.store.revokeToken(token.user, id));
    if (!revoked) {
      if (token && !mayRevoke)
        await this.audit.record({
          actor: principal.user,
          action: 'forbidden',
          target: `token ${id}`,
          source,
          detail: { owner: token.user },
        });
      throw new StewardError(
        'STEWARD_NOT_FOUND',
        `no live token ${id} of yours (see \`steward token list\`)`,
      );
    }
    await this.audit.record({
      actor: principal.user,
      action: 'token.revoke',
      target: id,
      source,
      detail: { user: token.user, kind: token.kind, name: token.name },
    });
  }

  /** Records a use (`last_used_at`, audited as `token.use`) at most once a minute per token. */
  private async touch(found: FoundToken, now: number, source: string | undefined): Promise<void> {
    if (found.token.lastUsedAt !== null && now - found.token.lastUsedAt <= TOUCH_INTERVAL_MS) return;
    await this.store.touchToken(found.token.id, now);
    await this.audit.record({
      actor: found.user.name,
      action: 'token.use',
      target: found.token.id,
      source,
      detail: { kind: found.token.kind },
    });
  }
}

/** Why a found token (of a user not disabled) is refused for `kinds`, or undefined when it is good. */
function refusalOf(found: FoundToken | undefined, kinds: readonly TokenRecord['kind'][]): string | undefined {
  if (!found) return 'unknown token';
  if (!kinds.includes(found.token.kind)) return `${found.token.kind} token used as ${kinds.join('/')}`;
  if (found.token.revoked) return 'revoked';
  if (found.expired) return 'expired';
  return undefined;
}
